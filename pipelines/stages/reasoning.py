"""Verified answers by rejection sampling: sample k answers per prompt, keep those whose final answer agrees with the
reference (rules in `pipelines.prompts.reasoning`).

SplitReference: messages -> id, prompt, prompt_id, reference, answer_kind, reference_answer (the last assistant turn
                is the reference; a record without a final answer the rules read is dropped as `no_reference`)
Verify:         prompt, answer_kind, reference_answer -> one row per sampled answer: messages, source, meta,
                verified; a wrong one is dropped as `wrong_answer: got 41, expected 42`, one without a final answer
                as `no_answer`, correct ones past `keep` per prompt as `surplus_correct`. Its summary has pass@1
                (correct samples / samples) and pass@k (prompts with a correct sample / prompts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import polars as pl

from pipelines.core.config import max_tokens_setting
from pipelines.core.stage import MESSAGES, Context, MapStage, with_drops
from pipelines.prompts.reasoning import Reference, agrees, final_answer, reference_of, solve_request
from pipelines.teacher.guards import trim_cut_answer
from pipelines.teacher.stage import Asks, Sampling
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


@dataclass
class Verify(Asks, MapStage):
    """Not a `TeacherStage`: each sampled answer becomes a row of its own."""

    sampling: ReasoningSampling = field(default_factory=ReasoningSampling)
    samples: int = 4
    keep: int = 1
    name = "verify"
    requires = ("prompt", "prompt_id", "answer_kind", "reference_answer")
    provides = ("messages", "source", "meta", "verified")
    batch_size = 16
    prompt_files = (PROMPT_FILE,)

    def summary(self, counters: dict) -> dict:
        prompts, samples = counters.get("prompts", 0), counters.get("samples", 0)
        return {"verification": {"prompts": prompts, "samples_per_prompt": self.samples,
                                 "pass@1": round(counters.get("correct", 0) / samples, 4) if samples else None,
                                 f"pass@{self.samples}": round(counters.get("solved", 0) / prompts, 4)
                                 if prompts else None}}

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        rows = batch.to_dicts()
        asks = [(r, k) for r in rows for k in range(self.samples)]
        requests = [solve_request(r["prompt"], r["answer_kind"],
                                  self.sampling.request_params(self.sampling.max_tokens, f"{r['prompt_id']}/s{k}"))
                    for r, k in asks]
        out, reasons, taken = [], [], {}
        for (row, k), result in zip(asks, self.ask(ctx, requests)):
            reference = Reference(row["answer_kind"], row["reference_answer"])
            answer = trim_cut_answer(result.text or "", result.finish_reason)
            got = final_answer(answer, reference.kind) if not result.error else None
            right = agrees(got, reference)
            if result.error:
                reason = f"request_failed: {result.error}"
            elif got is None:
                reason = "no_answer: no final answer found"
            elif not right:
                reason = f"wrong_answer: got {got[:40]}, expected {reference.value[:40]}"
            elif taken.get(row["prompt_id"], 0) >= self.keep:
                reason = f"surplus_correct: {self.keep} verified answer(s) already kept for this prompt"
            else:
                reason = None
                taken[row["prompt_id"]] = taken.get(row["prompt_id"], 0) + 1
            ctx.count("samples")
            ctx.count("correct", right)
            reasons.append(reason)
            out.append({**row, "messages": [{"role": "user", "content": row["prompt"]},
                                            {"role": "assistant", "content": answer}],
                        "source": "reasoning:verified",
                        "meta": json.dumps({"sample": k, "got": got, "expected": reference.value}),
                        "verified": right})
        ctx.count("prompts", len(rows))
        solved = {row["prompt_id"] for (row, _), sample in zip(asks, out) if sample["verified"]}
        ctx.count("solved", len(solved))
        frame = pl.DataFrame(out, schema={**batch.schema, "messages": MESSAGES, "source": pl.String,
                                          "meta": pl.String, "verified": pl.Boolean})
        return with_drops(frame, reasons)


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
            reasons.append(None if right else "no_answer: no final answer found" if got is None else
                           f"wrong_answer: got {got[:40]}, expected {reference.value[:40]}")
        return with_drops(batch.with_columns(pl.Series("verified", verified, dtype=pl.Boolean)), reasons)
