"""UltraChat-style dialogue distillation with a teacher.

AskOpening:       seed_id, sector, seed, persona -> question
SimulateDialogue: question, persona -> messages, source, meta

The teacher plays two separate roles: the assistant (answers the dialogue as it stands) and a user simulator (a
separate chat prompted with the dialogue so far and a persona). A bad user turn is asked again up to
`retries` times with another sampling seed; if it stays bad the dialogue ends at its last good exchange, and a
dialogue with fewer than `min_turns` exchanges is dropped with the reason of the turn that ended it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import polars as pl

from pipelines.stage import MESSAGES, Context, MapStage, with_drops
from pipelines.stages import ultrachat_prompts as P
from pipelines.teacher import Request


@dataclass
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens_user: int = 40
    max_tokens_assistant: int = 112

    def params(self, role: str, seed: str) -> dict:
        """Request params; `seed` makes each sample its own cache entry (and a reproducible one where honoured)."""
        max_tokens = self.max_tokens_user if role == "user" else self.max_tokens_assistant
        return {"max_tokens": max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "seed": int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16)}


@dataclass
class AskOpening(MapStage):
    sampling: Sampling
    retries: int = 1
    name = "opening"
    requires = ("seed_id", "sector", "seed")
    provides = ("question",)
    batch_size = 64
    uses_teacher = True

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        rows = batch.to_dicts()
        questions: list[str | None] = [None] * len(rows)
        reasons: list[str | None] = [None] * len(rows)
        todo = list(range(len(rows)))
        for attempt in range(self.retries + 1):
            if attempt:
                ctx.count("opening_reasked", len(todo))
            requests = [Request(P.build_opening(rows[i]["sector"], rows[i]["seed"]),
                                self.sampling.params("user", f"{rows[i]['seed_id']}/open/{attempt}")) for i in todo]
            results = ctx.teacher.chat_many(requests, desc=self.name)
            still = []
            for i, result in zip(todo, results):
                if result.error:
                    reasons[i] = f"request_failed: {result.error}"
                    continue
                turn = P.parse_user_turn(result.text)
                reasons[i] = P.check_user_turn(turn, []) or P.check_on_topic(turn, rows[i]["seed"])
                if reasons[i]:
                    still.append(i)
                else:
                    questions[i] = P.opening_turn(rows[i]["sector"], rows[i]["seed"], turn)
            todo = still
        return with_drops(batch.with_columns(pl.Series("question", questions, dtype=pl.String)), reasons)


@dataclass
class SimulateDialogue(MapStage):
    sampling: Sampling
    turns: int = 3
    min_turns: int = 2
    retries: int = 1
    name = "dialogue"
    requires = ("seed_id", "sector", "seed", "persona", "question")
    provides = ("messages", "source", "meta")
    batch_size = 64
    uses_teacher = True

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        rows = batch.to_dicts()
        dialogues = [[{"role": "user", "content": r["question"]}] for r in rows]
        ended: list[str | None] = [None] * len(rows)
        for turn in range(self.turns):
            active = [i for i in range(len(rows)) if ended[i] is None]
            self._answer(rows, dialogues, ended, active, turn, ctx)
            if turn + 1 < self.turns:
                active = [i for i in active if ended[i] is None]
                self._ask(rows, dialogues, ended, active, turn, ctx)
        reasons = []
        for i, dialogue in enumerate(dialogues):
            exchanges = len(dialogue) // 2
            if exchanges < self.min_turns:
                reasons.append(ended[i] or "too_short: fewer exchanges than min_turns")
            else:
                reasons.append(None)
                if ended[i]:
                    ctx.count(f"truncated_by_{ended[i].split(':')[0]}")
        out = batch.with_columns(
            pl.Series("messages", [d[: len(d) // 2 * 2] for d in dialogues], dtype=MESSAGES),
            pl.Series("source", [f"ultrachat:{r['sector']}" for r in rows], dtype=pl.String),
            pl.Series("meta", [json.dumps({k: r[k] for k in ("seed_id", "sector", "seed", "persona")})
                               for r in rows], dtype=pl.String),
        )
        return with_drops(out, reasons)

    def _answer(self, rows, dialogues, ended, active, turn, ctx) -> None:
        requests = [Request(list(dialogues[i]), self.sampling.params("assistant", f"{rows[i]['seed_id']}/a{turn}"))
                    for i in active]
        for i, result in zip(active, ctx.teacher.chat_many(requests, desc=f"{self.name} answer {turn + 1}")):
            if result.error:
                ended[i] = f"request_failed: {result.error}"
                continue
            text = P.parse_assistant_turn(result.text, result.finish_reason)
            ended[i] = P.check_assistant_turn(text, dialogues[i])
            if ended[i] is None:
                dialogues[i].append({"role": "assistant", "content": text})

    def _ask(self, rows, dialogues, ended, active, turn, ctx) -> None:
        for attempt in range(self.retries + 1):
            if not active:
                return
            if attempt:
                ctx.count("user_turn_reasked", len(active))
            requests = [Request(P.build_user_turn(dialogues[i], rows[i]["persona"]),
                                self.sampling.params("user", f"{rows[i]['seed_id']}/u{turn}/{attempt}"))
                        for i in active]
            retry = []
            for i, result in zip(active, ctx.teacher.chat_many(requests, desc=f"{self.name} user {turn + 2}")):
                if result.error:
                    ended[i] = f"request_failed: {result.error}"
                    continue
                text = P.parse_user_turn(result.text)
                ended[i] = P.check_user_turn(text, dialogues[i])
                if ended[i] is None:
                    dialogues[i].append({"role": "user", "content": text})
                else:
                    retry.append(i)
            active = retry
