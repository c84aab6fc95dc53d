"""The teacher-stage contract: a stage that asks a teacher, accepts an answer or says why not, and asks again.

A per-row teacher stage is a `TeacherStage` with two methods (see docs/architecture.md for a whole one):

    @dataclass
    class Summarize(TeacherStage):
        sampling: Sampling = field(default_factory=Sampling)
        retries: int = 1
        name = "summary"
        requires = ("text",)
        provides = ("summary",)
        prompts = ("summarize.yaml",)

        def request(self, row, attempt):
            return Request(render("summarize", text=row["text"]), self.sampling.params(f"{row['id']}/{attempt}"))

        def accept(self, row, result):
            summary = result.text.strip()
            return Verdict({"summary": summary}, refusal(summary))

The base owns what every teacher stage repeats: which teacher it talks to (`teacher_role`), the re-ask loop (an
answer refused by `accept` is asked again, with the attempt number in its seed, up to `retries` times; a failed
request is not), the `<name>_reasked` counter, and the drop reason of a row whose last answer was refused. Stages
that ask several requests per row (completions, judge ratings) or make rows from answers (instruction generation)
use `ask` and `ask_each` directly. `Sampling` turns a seed text into request params, so each attempt is its own
cache entry and a reproducible one where the endpoint honours `seed`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import polars as pl

from pipelines.core.config import temperature_setting, top_p_setting
from pipelines.core.stage import Context, MapStage, teacher_for, with_drops
from pipelines.teacher.client import Request, Result


def seed_number(text: str) -> int:
    """The request seed for a sample named by `text` ("<row id>/<turn>/<attempt>")."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


@dataclass
class Sampling:
    """Sampling settings of a teacher stage; subclasses add their `max_tokens_*` fields."""

    temperature: float = temperature_setting()
    top_p: float = top_p_setting()

    def request_params(self, max_tokens: int, seed: str) -> dict:
        return {"max_tokens": max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "seed": seed_number(seed)}


@dataclass(frozen=True)
class Verdict:
    """What `accept` makes of an answer: the row's new column values (kept on a dropped row too, so the quarantine
    shows what was refused) and why it is refused (None accepts it); `final` refuses it without asking again."""

    values: dict = field(default_factory=dict)
    reason: str | None = None
    final: bool = False
    events: tuple[str, ...] = ()  # counted in the report when this verdict is the row's last


class Asks:
    """Talking to a teacher: mixed into any stage that does."""

    uses_teacher = True
    teacher_role = "teacher"
    parallel = None  # the teacher client is the concurrency: the stage runs where the run runs

    def client(self, ctx: Context, role: str | None = None):
        """The teacher this stage talks to in `role` (default `teacher_role`; "judge" falls back to the teacher
        when no judge is configured)."""
        return teacher_for(self, ctx, role)

    def ask(self, ctx: Context, requests: list[Request], desc: str | None = None,
            role: str | None = None) -> list[Result]:
        return self.client(ctx, role).chat_many(requests, desc=desc or self.name)

    def ask_each(self, ctx: Context, todo: list[int], request: Callable[[int, int], Request],
                 accept: Callable[[int, Result], Verdict], *, retries: int, desc: str | None = None,
                 counter: str | None = None, role: str | None = None) -> dict[int, Verdict]:
        """Ask for each item of `todo` (`request(i, attempt)`), re-asking those whose verdict is a non-final refusal
        up to `retries` times (counted as `counter`); the last verdict of each item, its events counted."""
        verdicts: dict[int, Verdict] = {}
        for attempt in range(retries + 1):
            if not todo:
                break
            if attempt:
                ctx.count(counter or f"{self.name}_reasked", len(todo))
            results = self.ask(ctx, [request(i, attempt) for i in todo], desc, role)
            retry = []
            for i, result in zip(todo, results):
                if result.error:
                    verdicts[i] = Verdict(reason=f"request_failed: {result.error}", final=True)
                    continue
                verdicts[i] = accept(i, result)
                if verdicts[i].reason and not verdicts[i].final:
                    retry.append(i)
            todo = retry
        for verdict in verdicts.values():
            for event in verdict.events:
                ctx.count(event)
        return verdicts


class TeacherStage(Asks, MapStage):
    """One request per row: `request(row, attempt)` and `accept(row, result) -> Verdict`; the verdict's values
    become the columns named in `provides` (typed by `dtypes`, else strings); a column the verdict leaves out (a
    failed request) keeps its input value, or null."""

    retries: int = 1
    batch_size = 64
    dtypes: dict = {}

    def request(self, row: dict, attempt: int) -> Request:
        raise NotImplementedError

    def accept(self, row: dict, result: Result) -> Verdict:
        raise NotImplementedError

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        rows = batch.to_dicts()
        verdicts = self.ask_each(ctx, list(range(len(rows))), lambda i, attempt: self.request(rows[i], attempt),
                                 lambda i, result: self.accept(rows[i], result), retries=self.retries)
        new = [verdicts[i] for i in range(len(rows))]
        columns = [pl.Series(name, [v.values.get(name, row.get(name)) for v, row in zip(new, rows)],
                             dtype=self.dtypes.get(name, pl.String)) for name in self.provides]
        return with_drops(batch.with_columns(*columns), [v.reason for v in new])
