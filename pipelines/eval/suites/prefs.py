"""Preference accuracy on an export's `test_prefs` (`--prefs-export DIR`): the share of pairs whose chosen answer
the model gives a higher log-probability than the rejected one, given the prompt turns (summed over the answer's
tokens, as `pipelines.train`'s log-likelihood accuracy; per token in the summary too). Scored with transformers, so
MODEL and the baseline must be checkpoint directories or embedded models (whose checkpoint is used)."""

from __future__ import annotations

import math
from pathlib import Path

from pipelines.core.errors import ConfigError

NAME = "prefs"
ABOUT = "preference accuracy on an export's test_prefs: log p(chosen) > log p(rejected) given the prompt"
DEFAULT_LIMIT = 200


def items(limit: int | None, options: dict | None = None) -> list[dict]:
    import polars as pl

    export = (options or {}).get("prefs_export")
    if export is None:
        raise ConfigError("the prefs suite reads an export's test_prefs: give --prefs-export DIR")
    files = sorted((Path(export) / "data").glob("test_prefs-*.parquet"))
    if not files:
        raise ConfigError(f"{export} has no data/test_prefs-*.parquet: give an ultrafeedback-style export")
    rows = pl.read_parquet(files, columns=["prompt_id", "chosen", "rejected"]).to_dicts()
    return [{"id": r["prompt_id"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows[:limit]]


def answer_logp(model, tokenizer, messages: list[dict]) -> tuple[float, int]:
    """(log p of the last turn given the turns before it, its tokens)."""
    import torch

    prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True,
                                           return_dict=False)
    whole = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    prompt, whole = list(prompt), list(whole)
    if whole[:len(prompt)] != prompt or len(whole) == len(prompt):
        raise ConfigError("the chat template does not render the prompt as the start of the conversation")
    with torch.no_grad():
        logits = model(torch.tensor([whole])).logits[0, :-1].float()
    logps = torch.log_softmax(logits, dim=-1)[torch.arange(len(whole) - 1), torch.tensor(whole[1:])]
    return float(logps[len(prompt) - 1:].sum()), len(whole) - len(prompt)


def scores(checkpoint: Path, rows: list[dict]) -> list[dict]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    out = []
    for row in rows:
        chosen, n_chosen = answer_logp(model, tokenizer, row["chosen"])
        rejected, n_rejected = answer_logp(model, tokenizer, row["rejected"])
        out.append({"logp_chosen": chosen, "logp_rejected": rejected, "score": float(chosen > rejected),
                    "per_token": float(chosen / n_chosen > rejected / n_rejected)})
    return out


def checkpoint(model) -> Path:
    """The model's transformers checkpoint: its directory, or an embedded model's converted one."""
    from pipelines.teacher.weights import MODELS, ensure_checkpoint

    if model.checkpoint is not None:
        return model.checkpoint
    if model.spec in MODELS:
        return ensure_checkpoint(model=model.spec)
    raise ConfigError(f"the prefs suite scores with transformers: {model.spec} is not a checkpoint directory or "
                      "an embedded model")


def prompt_of(item: dict) -> str:
    """What the model is asked (decontaminated against its training prompts)."""
    return "\n".join(m["content"] for m in item["chosen"][:-1] if m["role"] == "user")


def run(rows: list[dict], ctx) -> list[dict]:
    out = [dict(r) for r in rows]
    for prefix, model in {"": ctx.model, "baseline_": ctx.baseline}.items():
        if model is None:
            continue
        for row, found in zip(out, scores(checkpoint(model), rows)):
            row.update({f"{prefix}{k}": v for k, v in found.items()})
            row[f"{prefix}verdict"] = "chosen preferred" if found["score"] else "rejected preferred"
    return out


def summary(rows: list[dict]) -> dict:
    per_token = [r["per_token"] for r in rows if "per_token" in r]
    margins = [r["logp_chosen"] - r["logp_rejected"] for r in rows if "logp_chosen" in r]
    return {"per_token_accuracy": round(sum(per_token) / len(per_token), 4) if per_token else None,
            "mean_logp_margin": round(sum(margins) / len(margins), 4) if margins and not any(
                math.isnan(m) for m in margins) else None}
