"""The instruction-following suites' run and summary: each model's answers checked by `pipelines.prompts.following`
(IFEval's and IFBench's rules); `score` is prompt-level strict accuracy."""

from __future__ import annotations

from pipelines.eval.stats import mean_ci, ratio_ci, rounded
from pipelines.prompts.following import check


def run(rows: list[dict], ctx, kind: str, params: dict, suite: str) -> list[dict]:
    """Ask MODEL (and the baseline) every prompt; score each answer. `score` is prompt-level strict accuracy."""
    from pipelines.teacher.wire import Request

    requests = [Request([{"role": "user", "content": r["prompt"]}], params) for r in rows]
    out = [dict(r) for r in rows]
    for prefix, model in {"": ctx.model, "baseline_": ctx.baseline}.items():
        if model is None:
            continue
        for row, result in zip(out, ctx.generate(model, requests, f"{suite} {model.name}")):
            if result.text is None:
                strict = loose = [False] * len(row["instruction_id_list"])
                verdict = f"no output: {result.error}"
            else:
                strict, loose = check(result.text, row, kind)
                verdict = ("empty answer" if not result.text.strip() else
                           "followed all" if all(strict) else "missed some")
            missed = [i for i, ok in zip(row["instruction_id_list"], strict) if not ok]
            row.update({f"{prefix}output": result.text, f"{prefix}strict": strict, f"{prefix}loose": loose,
                        f"{prefix}score": float(all(strict)), f"{prefix}verdict": verdict, f"{prefix}missed": missed,
                        f"{prefix}finish_reason": result.finish_reason})
    return out


def summary(rows: list[dict]) -> dict:
    """Prompt-level loose and instruction-level strict and loose accuracy, with bootstrap 95% CIs over items."""
    out = {}
    for prefix in ("", "baseline_"):
        if not rows or f"{prefix}strict" not in rows[0]:
            continue
        strict = [r[f"{prefix}strict"] for r in rows]
        loose = [r[f"{prefix}loose"] for r in rows]
        sizes = [len(s) for s in strict]
        out[f"{prefix}also"] = {
            "prompt-level loose": rounded(mean_ci([float(all(v)) for v in loose])),
            "instruction-level strict": rounded(ratio_ci([sum(v) for v in strict], sizes)),
            "instruction-level loose": rounded(ratio_ci([sum(v) for v in loose], sizes)),
        }
    return out
