"""Card values of a preference export: how the judge rated, what it was measured to tell, and what it produced.

`values(run, judge, judge_mode)` reads the finished export (`*_prefs` splits) and the judge stage's summary.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl

from pipelines.stages.export_prefs import EXPORT_PREFS_SCHEMA
from pipelines.teacher.weights import MODELS


def values(run, judge, judge_mode: str) -> dict:
    """Every card value of a preference export; `judge` is the TeacherConfig that rated (None: pairs read in)."""
    files = sorted(run.export_dir.glob("data/*_prefs-*.parquet"))
    data = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed") if files else pl.DataFrame()
    if not data.height:
        data = pl.from_arrow(EXPORT_PREFS_SCHEMA.empty_table())
    return {"kind": "preference", "columns": ", ".join(EXPORT_PREFS_SCHEMA.names),
            **feedback_summary(data, run.summaries.get("judge", {})), **judge_statement(judge, judge_mode)}


def histogram(values: list[float]) -> str:
    counts = Counter(round(v * 2) / 2 for v in values if v is not None)
    return ", ".join(f"{k:g}: {n}" for k, n in sorted(counts.items())) or "-"


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


def judge_statement(judge, mode: str) -> dict:
    """Card values: how the judge rated, and what it was measured to tell (embedded judges) or that it was not."""
    if judge is None:
        return {"judge_mode": mode, "judge_method": "-", "judge_caveat": "-"}
    if not judge.base_url:
        model = MODELS.get(judge.embedded.model)
        caveat = model.judged if model else "an embedded GGUF this project has not measured as a judge."
    else:
        caveat = ("not measured by this project; `python bench/judge_agreement.py --base-url URL --model NAME` "
                  "measures a judge against human labels (hh-rlhf) and a graded set of degraded answers.")
    return {"judge_mode": mode, "judge_method": JUDGE_METHODS[mode], "judge_caveat": caveat}


def feedback_summary(data: pl.DataFrame, judge: dict) -> dict:
    """Card values: score distributions, judge parse failures and ordering agreement, principles and models;
    `judge` is the judge stage's summary (empty for pairs read from a dataset)."""
    requests = judge.get("requests", 0)
    failures = judge.get("parse_failures", 0)
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
        "judge_expected_ratings": str(judge.get("expected_ratings", 0)),
        "judge_failure_rate": f"{failures / requests:.3f}" if requests else "-",
        "agreement_mean": f"{agreement.mean():.3f}" if len(agreement) else "-",
        "agreement_rows": str(len(agreement)),
        "principles": ", ".join(f"{k}: {n}" for k, n in sorted(principles.items(), key=str)) or "-",
        "models": ", ".join(f"{k}: {n}" for k, n in sorted(models.items(), key=str)) or "-",
    }
