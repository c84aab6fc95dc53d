"""GSM8K test problems (the shipped MIT-licensed set), greedy, scored by exact match of the final number with the
project's answer extraction (`pipelines.prompts.reasoning`: `#### N`, "the answer is N", else the last number)."""

from __future__ import annotations

from pipelines.eval.suites import shipped
from pipelines.prompts.reasoning import agrees, final_answer, reference_of
from pipelines.teacher.wire import Request

NAME = "gsm8k"
ABOUT = "GSM8K test problems, exact match of the final number (accuracy)"
DEFAULT_LIMIT = 100
PARAMS = {"max_tokens": 384, "temperature": 0.0, "seed": 0}
ASK = "{question}\n\nSolve the problem step by step. End with the final answer on its own line as: #### <number>"


def items(limit: int | None, options: dict | None = None) -> list[dict]:
    return [{"id": f"gsm8k-{k}", "question": row["question"], "reference": reference_of(row["answer"]).value}
            for k, row in enumerate(shipped(NAME, limit))]


def score(text: str | None, error: str | None, reference: str) -> tuple[float, str, str | None]:
    """(1 or 0, a verdict, the answer read)."""
    if text is None:
        return 0.0, f"no output: {error}", None
    got = final_answer(text, "number")
    if got is None:
        return 0.0, "no final number", None
    ok = agrees(got, reference_of(f"#### {reference}"))
    return float(ok), "correct" if ok else "wrong", got


def prompt_of(item: dict) -> str:
    """What the model is asked (decontaminated against its training prompts)."""
    return item["question"]


def run(rows: list[dict], ctx) -> list[dict]:
    requests = [Request([{"role": "user", "content": ASK.format(question=r["question"])}], PARAMS) for r in rows]
    who = {"": ctx.model, "baseline_": ctx.baseline}
    out = [dict(r) for r in rows]
    for prefix, model in who.items():
        if model is None:
            continue
        for row, result in zip(out, ctx.generate(model, requests, f"gsm8k {model.name}")):
            value, verdict, got = score(result.text, result.error, row["reference"])
            row.update({f"{prefix}output": result.text, f"{prefix}answer": got, f"{prefix}verdict": verdict,
                        f"{prefix}score": value, f"{prefix}finish_reason": result.finish_reason})
    return out
