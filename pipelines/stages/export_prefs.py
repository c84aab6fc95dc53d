"""Export preference pairs shaped like HuggingFaceH4/ultrafeedback_binarized, with a card.

Splits `train_prefs`/`test_prefs` (every pair), `train_sft`/`test_sft` and `train_gen`/`test_gen` (one row per
prompt: its pair with the highest chosen score), all with the same columns: `prompt`, `prompt_id`, `chosen`,
`rejected`, `messages` (= chosen), `score_chosen`, `score_rejected`, plus `chosen_model`, `rejected_model`,
`completions` (every rated completion, so a user can binarize again) and `ordering_agreement` (the judge's, null for
pairs that came from a dataset). A pair's part (train or test) comes from a hash of its prompt_id, so one prompt
never lands in both; near-duplicate prompts that straddle train and test move to train (`separate_splits`).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.cards import write_card
from pipelines.stage import Context, Stage
from pipelines.stages.export import separate_splits, unit_hash
from schemas import PREFERENCE

PREF_SPLITS = ("train_prefs", "test_prefs", "train_sft", "test_sft", "train_gen", "test_gen")
COLUMNS = ("prompt", "prompt_id", "chosen", "rejected", "messages", "score_chosen", "score_rejected",
           "chosen_model", "rejected_model", "completions")
EXPORT_PREFS_SCHEMA = pa.schema([*(PREFERENCE.field(c) for c in COLUMNS),
                                 pa.field("ordering_agreement", pa.float64())])


def parts(prompt_ids: list[str], test_fraction: float) -> list[str]:
    """"train"/"test" per row from its prompt_id; with 4+ prompts and none in test, the one that hashes lowest
    goes there (`datasets` cannot load an empty split)."""
    out = ["test" if unit_hash(p + ":test") < test_fraction else "train" for p in prompt_ids]
    if "test" not in out and len(set(prompt_ids)) >= 4 and test_fraction > 0:
        lowest = min(prompt_ids, key=lambda p: unit_hash(p + ":test"))
        out = ["test" if p == lowest else s for p, s in zip(prompt_ids, out)]
    return out


def histogram(values: list[float]) -> str:
    counts = Counter(round(v * 2) / 2 for v in values if v is not None)
    return ", ".join(f"{k:g}: {n}" for k, n in sorted(counts.items())) or "-"


@dataclass
class ExportPrefs(Stage):
    test_fraction: float = 0.05
    card: str = "ultrafeedback"
    leakage_threshold: float = 0.8
    name = "export"
    requires = ("prompt", "prompt_id", "chosen", "rejected")
    provides = ("split",)

    def run(self, batches, ctx: Context):
        frames = [b for b in batches if b.height]
        data = pl.concat(frames, how="diagonal_relaxed") if frames else pl.from_arrow(EXPORT_PREFS_SCHEMA.empty_table())
        if "ordering_agreement" not in data.columns:
            data = data.with_columns(pl.lit(None, dtype=pl.Float64).alias("ordering_agreement"))
        split = parts(data["prompt_id"].to_list(), self.test_fraction)
        split = separate_splits(data["prompt"].fill_null(""), [f"{s}_prefs" for s in split], self.leakage_threshold,
                                ctx)
        data = data.with_columns(pl.Series("split", [s.split("_")[0] for s in split], dtype=pl.String))
        out_dir = ctx.run_dir / "export"
        shutil.rmtree(out_dir, ignore_errors=True)
        (out_dir / "data").mkdir(parents=True)
        counts = {}
        for part in ("train", "test"):
            pairs = data.filter(pl.col("split") == part)
            best = pairs.sort("score_chosen", descending=True, nulls_last=True).unique("prompt_id", keep="first",
                                                                                       maintain_order=True)
            for kind, rows in (("prefs", pairs), ("sft", best), ("gen", best)):
                if rows.height:
                    name = f"{part}_{kind}"
                    table = pa.Table.from_pylist(rows.select(EXPORT_PREFS_SCHEMA.names).to_dicts(),
                                                 schema=EXPORT_PREFS_SCHEMA)
                    pq.write_table(table, out_dir / "data" / f"{name}-00000-of-00001.parquet")
                    counts[name] = table.num_rows
        counts = {s: counts[s] for s in PREF_SPLITS if s in counts}
        extra = {"kind": "preference", "columns": ", ".join(EXPORT_PREFS_SCHEMA.names)}
        write_card(self.card, out_dir, ctx, counts, {**extra, **feedback_summary(data, ctx.run_dir),
                                                     **judge_statement(ctx.config)})
        yield data


JUDGE_METHODS = {
    "listwise": "the UltraFeedback rubric: instruction following, honesty (N/A allowed), truthfulness and "
                "helpfulness rated 1-5 with a rationale, one aspect per request with every completion shown, then an "
                "overall score 1-10, at temperature 0; each prompt judged under several orderings of its "
                "completions (as given, reversed, ...), the ratings averaged.",
    "pointwise": "each completion shown alone with the instruction and rated 1-9 overall at temperature 0 "
                 "(JSON enforced by a grammar where the endpoint supports `response_format`); the score is the "
                 "expected rating over the judge's probabilities of the digits 1-9 where the endpoint returns "
                 "logprobs (as G-Eval does), the sampled digit kept as the rating `overall_sampled`.",
    "pairwise": "every pair of completions shown in both orders (\"which is better, 1 or 2?\", at temperature 0); "
                "a pair's preference is the mean over both orders of the judge's probability of each answer "
                "(logprobs), else a verdict the two orders disagree on is a tie; the score is a completion's "
                "expected number of wins, the sampled wins kept as the rating `wins`.",
}


def judge_statement(cfg) -> dict:
    """Card values: how the judge rated, and what it was measured to tell (embedded judges) or that it was not."""
    judge = getattr(cfg, "judge", None) or getattr(cfg, "teacher", None)
    mode = getattr(cfg, "judge_mode", "listwise")
    if judge is None:
        return {"judge_mode": mode, "judge_method": "-", "judge_caveat": "-"}
    from pipelines.weights import MODELS

    if not judge.base_url:
        model = MODELS.get(judge.embedded.model)
        caveat = model.judged if model else "an embedded GGUF this project has not measured as a judge."
    else:
        caveat = ("not measured by this project; `python bench/judge_agreement.py --base-url URL --model NAME` "
                  "measures a judge against human labels (hh-rlhf) and a graded set of degraded answers.")
    return {"judge_mode": mode, "judge_method": JUDGE_METHODS[mode], "judge_caveat": caveat}


def feedback_summary(data: pl.DataFrame, run_dir: Path) -> dict:
    """Card values: score distributions, judge parse failures and ordering agreement, principles and models."""
    counters: Counter = Counter()
    for success in run_dir.glob("*_judge/_SUCCESS.json"):
        counters.update(json.loads(success.read_text()).get("counters", {}))
    requests = counters.get("judge_requests", 0)
    failures = counters.get("judge_parse_failures", 0)
    agreement = data["ordering_agreement"].drop_nulls() if data.height else pl.Series([], dtype=pl.Float64)
    overall, principles, models = [], Counter(), Counter()
    for completions in (data.unique("prompt_id")["completions"].to_list() if "completions" in data.columns
                        and data.height else []):
        for c in completions or []:
            overall.append(c["overall"])
            principles[c["principle"]] += 1
            models[c["model"]] += 1
    margins = (data["score_chosen"] - data["score_rejected"]).drop_nulls().to_list() if data.height else []
    return {
        "pairs": str(data.height),
        "score_chosen_hist": histogram(data["score_chosen"].to_list() if data.height else []),
        "score_rejected_hist": histogram(data["score_rejected"].to_list() if data.height else []),
        "overall_hist": histogram(overall),
        "margin_mean": f"{np.mean(margins):.2f}" if margins else "-",
        "judge_requests": str(requests),
        "judge_parse_failures": str(failures),
        "judge_expected_ratings": str(counters.get("judge_expected_ratings", 0)),
        "judge_failure_rate": f"{failures / requests:.3f}" if requests else "-",
        "agreement_mean": f"{agreement.mean():.3f}" if len(agreement) else "-",
        "agreement_rows": str(len(agreement)),
        "principles": ", ".join(f"{k}: {n}" for k, n in sorted(principles.items(), key=str)) or "-",
        "models": ", ".join(f"{k}: {n}" for k, n in sorted(models.items(), key=str)) or "-",
    }
