"""Verified answers by rejection sampling: sample k answers per prompt, keep those whose final answer agrees with the
reference (rules in `pipelines.prompts.reasoning`).

SplitReference: messages -> id, prompt, prompt_id, reference, answer_kind, reference_answer (the last assistant turn
                is the reference; a record without a final answer the rules read is dropped as `no_reference`)
Verify:         prompt, answer_kind, reference_answer -> samples: k sampled answers, each with the final answer
                read from it and whether it agrees with the reference. Its summary has pass@1 (correct samples /
                samples) and pass@k (prompts with a correct sample / prompts).
KeepVerified:   samples -> one row per sampled answer: messages, source, meta, verified; a wrong one is dropped as
                `wrong_answer: got 41, expected 42`, one without a final answer as `no_answer`, correct ones past
                `keep` per prompt as `surplus_correct`, so the quarantine keeps every refused answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import polars as pl

from pipelines.core.config import max_tokens_setting
from pipelines.core.stage import MESSAGES, Context, MapStage, with_drops
from pipelines.prompts.reasoning import Reference, agrees, final_answer, reference_of, solve_request
from pipelines.teacher.guards import trim_cut_answer
from pipelines.teacher.stage import Sampling, TeacherStage, Verdict, pass_rates
from pipelines.teacher.wire import Request, Result
from schemas import conversation_id, prompt_id

PROMPT_FILE = "prompts/reasoning.yaml"


@dataclass
class SplitReference(MapStage):
    name = "references"
    requires = ("messages",)
    provides = ("id", "prompt", "prompt_id", "reference", "answer_kind", "reference_answer")
    batch_size = 1024

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        values = {name: [] for name in self.provides}
        reasons = []
        for messages in batch["messages"].to_list():
            users = [m["content"] for m in messages if m["role"] == "user"]
            answers = [m["content"] for m in messages if m["role"] == "assistant"]
            prompt, reference = (users[0] if users else ""), (answers[-1] if answers else "")
            found = reference_of(reference) if reference else None
            reasons.append(None if found and prompt.strip() else
                           "no_prompt: no user turn" if not prompt.strip() else
                           "no_reference: no final answer the rules read (#### N, \\boxed{}, a letter)")
            for name, value in (("id", conversation_id([{"role": "user", "content": prompt}])), ("prompt", prompt),
                                ("prompt_id", prompt_id(prompt)), ("reference", reference),
                                ("answer_kind", found.kind if found else None),
                                ("reference_answer", found.value if found else None)):
                values[name].append(value)
        return with_drops(batch.with_columns(*(pl.Series(k, v, dtype=pl.String) for k, v in values.items())),
                          reasons)


@dataclass
class ReasoningSampling(Sampling):
    max_tokens: int = max_tokens_setting(256, "tokens per sampled answer")


def answer_problem(got: str | None, right: bool, expected: str) -> str | None:
    """Why an answer fails its reference: `no_answer` (no final answer read) or `wrong_answer: got 41, expected 42`;
    None when it agrees."""
    if right:
        return None
    if got is None:
        return "no_answer: no final answer found"
    return f"wrong_answer: got {got[:40]}, expected {expected[:40]}"


SAMPLES = pl.List(pl.Struct({"content": pl.String, "got": pl.String, "verified": pl.Boolean, "error": pl.String}))


@dataclass
class Verify(TeacherStage):
    sampling: ReasoningSampling = field(default_factory=ReasoningSampling)
    samples: int = 4
    name = "verify"
    requires = ("prompt", "prompt_id", "answer_kind", "reference_answer")
    provides = ("samples",)
    dtypes = {"samples": SAMPLES}
    batch_size = 16
    retries = 0
    sees_failures = True
    prompt_files = (PROMPT_FILE,)

    def summary(self, counters: dict) -> dict:
        return {"verification": pass_rates(counters, self.samples, "correct")}

    def requests(self, row: dict, attempt: int) -> list[Request]:
        return [solve_request(row["prompt"], row["answer_kind"],
                              self.sampling.request_params(self.sampling.max_tokens, f"{row['prompt_id']}/s{k}"))
                for k in range(self.samples)]

    def accept(self, row: dict, results: list[Result]) -> Verdict:
        reference = Reference(row["answer_kind"], row["reference_answer"])
        samples = []
        for result in results:
            answer = trim_cut_answer(result.text or "", result.finish_reason)
            got = final_answer(answer, reference.kind) if not result.error else None
            samples.append({"content": answer, "got": got, "verified": agrees(got, reference), "error": result.error})
        right = sum(s["verified"] for s in samples)
        return Verdict({"samples": samples},
                       counts={"prompts": 1, "samples": len(samples), "correct": right, "solved": int(right > 0)})


@dataclass
class KeepVerified(MapStage):
    keep: int = 1
    name = "keep_verified"
    requires = ("prompt", "reference_answer", "samples")
    provides = ("messages", "source", "meta", "verified")
    batch_size = 64

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        out, reasons = [], []
        for row in batch.to_dicts():
            samples, taken = row.pop("samples") or [], 0
            for k, sample in enumerate(samples):
                if sample["error"]:
                    reason = f"request_failed: {sample['error']}"
                elif problem := answer_problem(sample["got"], sample["verified"], row["reference_answer"]):
                    reason = problem
                elif taken >= self.keep:
                    reason = f"surplus_correct: {self.keep} verified answer(s) already kept for this prompt"
                else:
                    reason, taken = None, taken + 1
                reasons.append(reason)
                out.append({**row, "messages": [{"role": "user", "content": row["prompt"]},
                                                {"role": "assistant", "content": sample["content"]}],
                            "source": "reasoning:verified",
                            "meta": json.dumps({"sample": k, "got": sample["got"],
                                                "expected": row["reference_answer"]}),
                            "verified": sample["verified"]})
        schema = {**{c: t for c, t in batch.schema.items() if c != "samples"}, "messages": MESSAGES,
                  "source": pl.String, "meta": pl.String, "verified": pl.Boolean}
        return with_drops(pl.DataFrame(out, schema=schema), reasons)


@dataclass
class CheckAnswers(MapStage):
    """Check answers already written against the reference in `meta.reference` (Orca keeps it there): where the
    rules read the reference's final answer, an answer whose final answer differs is dropped as `wrong_answer`, one
    with none as `no_answer`; `verified` is true for the agreeing ones and null where there was nothing to check."""

    name = "check_answers"
    requires = ("messages", "meta")
    provides = ("verified",)
    batch_size = 1024

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        verified, reasons = [], []
        for messages, meta in zip(batch["messages"].to_list(), batch["meta"].to_list()):
            reference = reference_of(json.loads(meta or "{}").get("reference") or "")
            answer = next((m["content"] for m in reversed(messages) if m["role"] == "assistant"), "")
            if reference is None:
                verified.append(None)
                reasons.append(None)
                ctx.count("unchecked")
                continue
            got = final_answer(answer, reference.kind)
            right = agrees(got, reference)
            verified.append(right)
            reasons.append(answer_problem(got, right, reference.value))
        return with_drops(batch.with_columns(pl.Series("verified", verified, dtype=pl.Boolean)), reasons)
