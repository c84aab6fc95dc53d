"""Evol-Instruct (Xu et al., WizardLM, 2023): instructions made harder or wider, round by round, with eliminations.

Evolve:         prompt, prompt_id -> one row per root and round: messages (the evolved instruction and its answer),
                prompt, prompt_id, source, meta, root_id, parent_id, round, operation, parent_prompt, root_prompt

Each round, every root's latest surviving instruction evolves by one operation drawn for that root and round
(`pipelines.prompts.evol_instruct.OPERATIONS`). The rewrite is checked (`instruction_problem`: refused ones are asked
again, `retries` times, with another seed), then the judge says whether it gains anything over its parent, then the
teacher answers it and the answer is checked (`answer_problem`). An evolution that fails anywhere is a dropped row
with its reason and never becomes a parent: the next round evolves its parent again. Ids are content hashes
(`prompt_id`), so `parent_id` and `root_id` name the parent's and the root's prompt. A batch of roots is worked
through all rounds at once and written as one part; every request is cached, so a killed run redoes nothing.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

import polars as pl

from pipelines.core.config import max_tokens_setting, temperature_setting
from pipelines.core.stage import MESSAGES, Context, MapStage, with_drops
from pipelines.prompts import evol_instruct as E
from pipelines.teacher.wire import Request, Result
from pipelines.teacher.guards import trim_cut_answer
from pipelines.teacher.stage import Asks, Sampling, Verdict
from schemas import prompt_id

LINEAGE = {"root_id": pl.String, "parent_id": pl.String, "round": pl.Int32, "operation": pl.String}


@dataclass
class EvolSampling(Sampling):
    temperature: float = temperature_setting(0.7)
    max_tokens_evolve: int = max_tokens_setting(128, "tokens per evolved instruction")
    max_tokens_answer: int = max_tokens_setting(192, "tokens per answer")
    answer_temperature: float = field(default=0.7, metadata={"help": "sampling temperature of the answers",
                                                             "range": "[0, 2]"})


@dataclass
class Evolve(Asks, MapStage):
    sampling: EvolSampling = field(default_factory=EvolSampling)
    rounds: int = 3
    operations: tuple[str, ...] = E.OPERATIONS
    retries: int = 1
    max_words: int = 200
    min_answer_words: int = 8
    judge_gain: bool = True
    seed: int = 0
    name = "evolve"
    requires = ("prompt", "prompt_id")
    provides = ("messages", "prompt", "prompt_id", "source", "meta", *LINEAGE, "parent_prompt", "root_prompt")
    other_roles = ("judge",)
    batch_size = 16
    prompt_files = (E.PROMPT_FILE,)

    def operation(self, root_id: str, round_no: int) -> str:
        """The operation drawn for a root in a round (the same on every run with the same seed)."""
        return random.Random(f"{self.seed}:{root_id}:{round_no}").choice(self.operations)

    def summary(self, counters: dict) -> dict:
        """Per round and per operation: evolutions tried and kept (the card's round and operation tables)."""
        def table(prefix: str, order) -> dict:
            keys = sorted({k.split(":")[1] for k in counters if k.startswith(prefix + ":")}, key=order)
            return {k: {"tried": counters.get(f"{prefix}:{k}:tried", 0), "kept": counters.get(f"{prefix}:{k}:kept", 0)}
                    for k in keys}
        return {"evolution": {"rounds": table("round", int),
                              "operations": table("operation", lambda op: E.OPERATIONS.index(op))}}

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        roots = batch.select("prompt", "prompt_id").to_dicts()
        current = [dict(r) for r in roots]  # each root's latest surviving instruction
        out: list[dict] = []
        for round_no in range(1, self.rounds + 1):
            tried = [self._row(root, parent, round_no) for root, parent in zip(roots, current)]
            self._evolve(tried, ctx)
            self._judge(tried, ctx)
            self._answer(tried, ctx)
            for i, row in enumerate(tried):
                for key in (f"round:{round_no}", f"operation:{row['operation']}"):
                    ctx.count(f"{key}:tried")
                    ctx.count(f"{key}:kept", row["drop_reason"] is None)
                if row["drop_reason"] is None:
                    current[i] = {"prompt": row["prompt"], "prompt_id": row["prompt_id"]}
            out += tried
        order = sorted(range(len(out)), key=lambda k: (k % len(roots), k))  # a root's rows together, by round
        return self._frame([out[k] for k in order])

    def _row(self, root: dict, parent: dict, round_no: int) -> dict:
        return {"root_id": root["prompt_id"], "root_prompt": root["prompt"], "parent_id": parent["prompt_id"],
                "parent_prompt": parent["prompt"], "round": round_no,
                "operation": self.operation(root["prompt_id"], round_no), "prompt": None, "prompt_id": None, "answer": None,
                "drop_reason": None}

    def _evolve(self, rows: list[dict], ctx: Context) -> None:
        def request(i: int, attempt: int) -> Request:
            row = rows[i]
            seed = f"{row['root_id']}/r{row['round']}/{attempt}"
            return Request(E.evolve_request(row["operation"], row["parent_prompt"]),
                           self.sampling.request_params(self.sampling.max_tokens_evolve, seed))

        def accept(i: int, result: Result) -> Verdict:
            text, labelled = E.clean_rewrite(result.text or "")
            reason = E.instruction_problem(text, rows[i]["parent_prompt"], self.max_words,
                                           result.finish_reason == "length")
            return Verdict({"prompt": text}, reason, counts={"label_removed": 1} if labelled else {})

        verdicts = self.ask_each(ctx, list(range(len(rows))), request, accept, retries=self.retries,
                                 desc=f"{self.name} round {rows[0]['round']}" if rows else None)
        for i, verdict in verdicts.items():
            rows[i]["prompt"] = verdict.values.get("prompt")
            rows[i]["prompt_id"] = prompt_id(rows[i]["prompt"] or "")
            rows[i]["drop_reason"] = verdict.reason

    def _judge(self, rows: list[dict], ctx: Context) -> None:
        """Rule 1: the judge compares each surviving rewrite with its parent; an unreadable verdict keeps it."""
        todo = [row for row in rows if row["drop_reason"] is None]
        if not self.judge_gain or not todo:
            return
        asks = [Request(E.equal_request(row["parent_prompt"], row["prompt"]), {"max_tokens": 96, "temperature": 0.0},
                        schema=E.EQUAL_SCHEMA) for row in todo]
        for row, result in zip(todo, self.ask(ctx, asks, f"{self.name} gain", role="judge")):
            equal = None if result.error else E.is_equal(result.data)
            ctx.count("gain_unreadable", equal is None)
            if equal:
                said = str(result.data.get("difference", ""))[:80]
                row["drop_reason"] = f"no_gain: the judge finds it equal to its parent (difference: {said!r})"

    def _answer(self, rows: list[dict], ctx: Context) -> None:
        todo = [i for i, row in enumerate(rows) if row["drop_reason"] is None]

        def request(i: int, attempt: int) -> Request:
            params = self.sampling.request_params(self.sampling.max_tokens_answer,
                                                  f"{rows[i]['root_id']}/r{rows[i]['round']}/answer")
            return Request([{"role": "user", "content": rows[i]["prompt"]}],
                           {**params, "temperature": self.sampling.answer_temperature})

        def accept(i: int, result: Result) -> Verdict:
            answer = trim_cut_answer(result.text or "", result.finish_reason)
            return Verdict({"answer": answer}, E.answer_problem(answer, self.min_answer_words))

        for i, verdict in self.ask_each(ctx, todo, request, accept, retries=0, desc=f"{self.name} answers").items():
            rows[i]["answer"] = verdict.values.get("answer")
            rows[i]["drop_reason"] = verdict.reason

    def _frame(self, rows: list[dict]) -> pl.DataFrame:
        def messages(row: dict) -> list[dict]:
            turns = [{"role": "user", "content": row["prompt"]}] if row["prompt"] else []
            return turns + ([{"role": "assistant", "content": row["answer"]}] if row["answer"] is not None else [])

        return with_drops(pl.DataFrame({
            "messages": pl.Series([messages(r) for r in rows], dtype=MESSAGES),
            "prompt": pl.Series([r["prompt"] for r in rows], dtype=pl.String),
            "prompt_id": pl.Series([r["prompt_id"] for r in rows], dtype=pl.String),
            "source": pl.Series(["evol_instruct"] * len(rows), dtype=pl.String),
            "meta": pl.Series([json.dumps({k: r[k] for k in LINEAGE}) for r in rows], dtype=pl.String),
            **{k: pl.Series([r[k] for r in rows], dtype=dtype) for k, dtype in LINEAGE.items()},
            "parent_prompt": pl.Series([r["parent_prompt"] for r in rows], dtype=pl.String),
            "root_prompt": pl.Series([r["root_prompt"] for r in rows], dtype=pl.String),
        }), [r["drop_reason"] for r in rows])
