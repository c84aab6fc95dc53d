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

from pipelines.core.config import max_tokens_setting, temperature_setting, top_p_setting
from pipelines.core.stage import MESSAGES, Context, MapStage, with_drops
from pipelines.prompts import ultrachat as P
from pipelines.teacher.client import Request


@dataclass
class Sampling:
    temperature: float = temperature_setting()
    top_p: float = top_p_setting()
    max_tokens_user: int = max_tokens_setting(40, "tokens per user turn")
    max_tokens_assistant: int = max_tokens_setting(112, "tokens per assistant turn")

    def params(self, role: str, seed: str) -> dict:
        """Request params; `seed` makes each sample its own cache entry (and a reproducible one where honoured)."""
        max_tokens = self.max_tokens_user if role == "user" else self.max_tokens_assistant
        return {"max_tokens": max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "seed": int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16)}


def ask_until_valid(ctx: Context, todo: list[int], make_request, accept, *, retries: int, desc: str,
                    counter: str) -> dict[int, str | None]:
    """Ask the teacher for each row in `todo`; `accept(i, text, finish_reason)` returns a drop reason or None
    (and keeps the turn). A row whose answer fails a guard is asked again with `make_request(i, attempt)`, up to
    `retries` times; a failed request is not. Returns the last reason per row (None = accepted)."""
    reasons: dict[int, str | None] = {}
    for attempt in range(retries + 1):
        if not todo:
            break
        if attempt:
            ctx.count(counter, len(todo))
        results = ctx.teacher.chat_many([make_request(i, attempt) for i in todo], desc=desc)
        retry = []
        for i, result in zip(todo, results):
            if result.error:
                reasons[i] = f"request_failed: {result.error}"
                continue
            reasons[i] = accept(i, result.text, result.finish_reason)
            if reasons[i]:
                retry.append(i)
        todo = retry
    return reasons


@dataclass
class AskOpening(MapStage):
    sampling: Sampling
    retries: int = 1
    name = "opening"
    requires = ("seed_id", "sector", "seed")
    provides = ("question",)
    batch_size = 64
    uses_teacher = True
    prompt_files = ("prompts/ultrachat.py",)

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        rows = batch.to_dicts()
        questions: list[str | None] = [None] * len(rows)

        def request(i: int, attempt: int) -> Request:
            return Request(P.build_opening(rows[i]["sector"], rows[i]["seed"]),
                           self.sampling.params("user", f"{rows[i]['seed_id']}/open/{attempt}"))

        def accept(i: int, text: str, finish_reason) -> str | None:
            turn = P.parse_user_turn(text)
            reason = P.check_user_turn(turn, []) or P.check_on_topic(turn, rows[i]["seed"])
            if reason is None:
                questions[i] = P.opening_turn(rows[i]["sector"], rows[i]["seed"], turn)
            return reason

        reasons = ask_until_valid(ctx, list(range(len(rows))), request, accept, retries=self.retries,
                                  desc=self.name, counter="opening_reasked")
        out = batch.with_columns(pl.Series("question", questions, dtype=pl.String))
        return with_drops(out, [reasons[i] for i in range(len(rows))])


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
    prompt_files = ("prompts/ultrachat.py",)

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        rows = batch.to_dicts()
        dialogues = [[{"role": "user", "content": r["question"]}] for r in rows]
        ended: list[str | None] = [None] * len(rows)
        for turn in range(self.turns):
            self._answer(rows, dialogues, ended, turn, ctx)
            if turn + 1 < self.turns:
                self._ask(rows, dialogues, ended, turn, ctx)
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

    def _answer(self, rows, dialogues, ended, turn, ctx) -> None:
        def request(i: int, attempt: int) -> Request:
            return Request(list(dialogues[i]), self.sampling.params("assistant", f"{rows[i]['seed_id']}/a{turn}"))

        def accept(i: int, text: str, finish_reason) -> str | None:
            text = P.parse_assistant_turn(text, finish_reason)
            reason = P.check_assistant_turn(text, dialogues[i])
            if reason is None:
                dialogues[i].append({"role": "assistant", "content": text})
            return reason

        active = [i for i in range(len(rows)) if ended[i] is None]
        ended_now = ask_until_valid(ctx, active, request, accept, retries=0, desc=f"{self.name} answer {turn + 1}",
                                    counter="")
        for i, reason in ended_now.items():
            ended[i] = reason

    def _ask(self, rows, dialogues, ended, turn, ctx) -> None:
        def request(i: int, attempt: int) -> Request:
            return Request(P.build_user_turn(dialogues[i], rows[i]["persona"]),
                           self.sampling.params("user", f"{rows[i]['seed_id']}/u{turn}/{attempt}"))

        def accept(i: int, text: str, finish_reason) -> str | None:
            text = P.parse_user_turn(text)
            reason = P.check_user_turn(text, dialogues[i])
            if reason is None:
                dialogues[i].append({"role": "user", "content": text})
            return reason

        active = [i for i in range(len(rows)) if ended[i] is None]
        ended_now = ask_until_valid(ctx, active, request, accept, retries=self.retries,
                                    desc=f"{self.name} user {turn + 2}", counter="user_turn_reasked")
        for i, reason in ended_now.items():
            ended[i] = reason
