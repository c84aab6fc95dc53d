"""Pairwise win rate of MODEL against the baseline on AlpacaEval's instructions (the shipped Apache-2.0 set), judged
in both orders by the judge (`--judge`; default the embedded Qwen2.5-Coder-1.5B): per order the judge's probability
that MODEL's answer is better (from the logprobs of its "1"/"2", else its verdict), an item's score the mean of its
two orders, so a judge that always picks the first answer scores every item 0.5. Also a length-controlled win rate
(AlpacaEval 2's idea): the win probability a logistic fit on the answers' length difference predicts at equal
length."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

from pipelines.core.errors import ConfigError
from pipelines.eval.suites import shipped
from pipelines.prompts.ultrafeedback import pair_first, pair_request
from pipelines.teacher.wire import Request

NAME = "judged"
ABOUT = ("win rate against the baseline on AlpacaEval instructions, judged in both orders (a tie = 1/2), and "
         "length-controlled")
DEFAULT_LIMIT = 100
PARAMS = {"max_tokens": 256, "temperature": 0.0, "seed": 0}
LC_ROUNDS = 500


def items(limit: int | None, options: dict | None = None) -> list[dict]:
    return shipped(NAME, limit)


def preference(result, model_first: bool) -> float | None:
    """P(MODEL's answer is better) from one judged order; None when the judge gave no verdict."""
    if result.error is not None or result.data not in (1, 2):
        return None
    p_first, _ = pair_first(result)
    return p_first if model_first else 1.0 - p_first


def prompt_of(item: dict) -> str:
    """What the model is asked (decontaminated against its training prompts)."""
    return item["instruction"]


def run(rows: list[dict], ctx) -> list[dict]:
    if ctx.baseline is None:
        raise ConfigError("the judged suite compares MODEL with a baseline: give --baseline MODEL")
    if ctx.judge is None:
        raise ConfigError("the judged suite needs a judge")
    asks = [Request([{"role": "user", "content": r["instruction"]}], PARAMS) for r in rows]
    mine = ctx.generate(ctx.model, asks, f"judged {ctx.model.name}")
    theirs = ctx.generate(ctx.baseline, asks, f"judged {ctx.baseline.name}")
    jobs, requests = [], []
    for k, (row, a, b) in enumerate(zip(rows, mine, theirs)):
        if a.text is None or b.text is None:
            continue
        for model_first in (True, False):
            first, second = (a.text, b.text) if model_first else (b.text, a.text)
            jobs.append((k, model_first))
            requests.append(pair_request(row["instruction"], first, second, 16))
    verdicts: list[dict] = [{} for _ in rows]
    for (k, model_first), result in zip(jobs, ctx.judge(requests, "judge") if requests else []):
        verdicts[k][model_first] = preference(result, model_first)
    out = []
    for row, a, b, seen in zip(rows, mine, theirs, verdicts):
        given = [v for v in seen.values() if v is not None]
        score = sum(given) / len(given) if given else None
        verdict = ("no output" if a.text is None or b.text is None else "judge gave no verdict" if score is None
                   else "win" if score > 0.5 else "loss" if score < 0.5 else "tie")
        out.append({**row, "output": a.text, "baseline_output": b.text, "score": score, "verdict": verdict,
                    "model_first": seen.get(True), "baseline_first": seen.get(False),
                    "length_difference": len(a.text or "") - len(b.text or "")})
    return out


def length_controlled(scores: np.ndarray, differences: np.ndarray) -> float:
    """sigmoid(a) of the fit p = sigmoid(a + b * tanh(difference / sd)) to the items' win probabilities."""
    sd = differences.std() or 1.0
    x = np.tanh(differences / sd)

    def loss(theta):
        p = np.clip(expit(theta[0] + theta[1] * x), 1e-9, 1 - 1e-9)
        return -np.mean(scores * np.log(p) + (1 - scores) * np.log(1 - p))

    return float(expit(minimize(loss, np.zeros(2), method="L-BFGS-B").x[0]))


def summary(rows: list[dict]) -> dict:
    scored = [r for r in rows if r["score"] is not None]
    if len(scored) < 2:
        return {"length_controlled": None}
    scores = np.array([r["score"] for r in scored])
    differences = np.array([r["length_difference"] for r in scored], dtype=float)
    value = length_controlled(scores, differences)
    rng = np.random.default_rng(0)
    draws = [length_controlled(scores[i], differences[i])
             for i in (rng.integers(0, len(scored), len(scored)) for _ in range(LC_ROUNDS))]
    ties = sum(r["verdict"] == "tie" for r in scored)
    both = [r for r in scored if r["model_first"] is not None and r["baseline_first"] is not None]
    agree = sum((r["model_first"] > 0.5) == (r["baseline_first"] > 0.5) for r in both)
    return {"length_controlled": [round(value, 4), round(float(np.percentile(draws, 2.5)), 4),
                                  round(float(np.percentile(draws, 97.5)), 4)],
            "ties": ties, "unjudged": len(rows) - len(scored),
            "order_agreement": round(agree / len(both), 4) if both else None,
            "mean_length_difference": round(float(differences.mean()), 1)}
