"""The teacher-stage contract: a stage that asks a teacher k requests per row, accepts the answers or says why not,
and asks again.

A per-row teacher stage is a `TeacherStage` with two methods; this one runs as it is (`tests/test_teacher_stage.py`
executes it, and docs/architecture.md has a whole recipe around it):

    @dataclass
    class Summarize(TeacherStage):
        sampling: Sampling = field(default_factory=Sampling)
        max_tokens: int = 64
        retries: int = 1
        name = "summary"
        requires = ("text", "id")
        provides = ("summary",)

        def requests(self, row, attempt):
            messages = [{"role": "user", "content": f"Summarize in one sentence: {row['text']}"}]
            return [Request(messages, self.sampling.request_params(self.max_tokens, f"{row['id']}/{attempt}"))]

        def accept(self, row, results):
            summary = results[0].text.strip()
            return Verdict({"summary": summary}, None if summary else "empty: no summary")

The base owns what every teacher stage repeats: which teacher it talks to (`teacher_role`), sending every row's
requests of a batch at once, the re-ask loop (a row whose answers `accept` refuses is asked again, with the attempt
number in its seeds, up to `retries` times; failed requests are not), the `<name>_reasked` counter, the verdict's
counters, and the drop reason of a row whose last answers were refused. A row whose every request failed is dropped
as `request_failed` without `accept`, unless the stage sets `sees_failures` (sampling stages that keep the answers
that came back). `begin(ctx)` runs before each batch, for what a stage learns from its teacher (its models).

Multi-round stages (a dialogue's turns, Evol-Instruct's generations, Magpie's turns) call the same loop per round
through `ask_rows` / `ask_each`, with a request and accept function over the rows still going. `Sampling` turns a
seed text into request params, so each attempt is its own cache entry and a reproducible one where the endpoint
honours `seed`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import polars as pl

from pipelines.core.config import temperature_setting, top_p_setting
from pipelines.core.stage import Context, MapStage, Stage, with_drops
from pipelines.teacher.wire import Request, Result


def teacher_for(stage: Stage, ctx: Context, role: str | None = None):
    """The client a stage talks to in `role` (default its `teacher_role`) from `ctx.clients`: the judge for "judge"
    when one is configured, else the teacher (`FALLBACKS`); the embedder for "embedder"."""
    key = serving_role(role or stage.teacher_role, ctx.clients)
    return None if key is None else ctx.clients[key]


# a role left unset (or set equal to the one before it) is served by the next: `Recipe.clients` leaves it out
FALLBACKS = {"judge": ("judge", "teacher"), "second_judge": ("second_judge", "judge", "teacher"),
             "embedder": ("embedder",)}


def serving_role(role: str, clients: dict) -> str | None:
    """The key of `clients` that serves `role` (`FALLBACKS`; any other role: itself, else the teacher)."""
    return next((key for key in FALLBACKS.get(role, (role, "teacher")) if clients.get(key) is not None), None)


def pass_rates(counters: dict, k: int, correct: str) -> dict:
    """A k-sample stage's summary from its counters `prompts`, `samples`, `solved` and `correct` (the name of its
    count of right answers): pass@1 (right answers / answers) and pass@k (prompts with a right answer / prompts)."""
    prompts, samples = counters.get("prompts", 0), counters.get("samples", 0)
    return {"prompts": prompts, "samples_per_prompt": k,
            "pass@1": round(counters.get(correct, 0) / samples, 4) if samples else None,
            f"pass@{k}": round(counters.get("solved", 0) / prompts, 4) if prompts else None}


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
    """What `accept` makes of a row's answers: its new column values (kept on a dropped row too, so the quarantine
    shows what was refused) and why it is refused (None accepts it); `final` refuses it without asking again."""

    values: dict = field(default_factory=dict)
    reason: str | None = None
    final: bool = False
    counts: dict = field(default_factory=dict)  # counters added to the report when this verdict is the row's last


class Asks:
    """Talking to a teacher: mixed into any stage that does."""

    uses_teacher = True
    teacher_role: str = "teacher"  # "judge" or "embedder": which of the context's clients the stage talks to
    other_roles: tuple[str, ...] = ()  # roles it also asks now and then (Evolve asks the judge about its rewrites)
    parallel = None  # the teacher client is the concurrency: the stage runs where the run runs

    def identity(self, ctx: Context) -> dict:
        """Its fingerprint covers the identity of each teacher it asks (`"teacher"`: the one of `teacher_role`)."""
        out = super().identity(ctx)
        if (teacher := self.client(ctx)) is not None:
            out["teacher"] = teacher.config.identity()
            for role in self.other_roles:
                out[role] = self.client(ctx, role).config.identity()
        return out

    def client(self, ctx: Context, role: str | None = None):
        """The teacher this stage talks to in `role` (default `teacher_role`; "judge" falls back to the teacher
        when no judge is configured)."""
        return teacher_for(self, ctx, role)

    def ask(self, ctx: Context, requests: list[Request], desc: str | None = None,
            role: str | None = None) -> list[Result]:
        return self.client(ctx, role).chat_many(requests, desc=desc or self.name)

    def ask_rows(self, ctx: Context, todo: list[int], requests: Callable[[int, int], list[Request]],
                 accept: Callable[[int, list[Result]], Verdict], *, retries: int, desc: str | None = None,
                 counter: str | None = None, role: str | None = None, sees_failures: bool = False
                 ) -> dict[int, Verdict]:
        """Ask each item of `todo` its requests (`requests(i, attempt)`, all items' at once), re-asking the items
        whose verdict is a non-final refusal up to `retries` times (counted as `counter`); the last verdict of each
        item, its counts added. An item whose every request failed is dropped as `request_failed` unless
        `sees_failures`."""
        verdicts: dict[int, Verdict] = {}
        for attempt in range(retries + 1):
            if not todo:
                break
            if attempt:
                ctx.count(counter or f"{self.name}_reasked", len(todo))
            asked = [requests(i, attempt) for i in todo]
            answers = iter(self.ask(ctx, [r for rs in asked for r in rs], desc, role))
            retry = []
            for i, sent in zip(todo, asked):
                results = [next(answers) for _ in sent]
                failed = [r.error for r in results if r.error]
                if results and len(failed) == len(results) and not sees_failures:
                    verdicts[i] = Verdict(reason=f"request_failed: {failed[0]}", final=True)
                    continue
                verdicts[i] = accept(i, results)
                if verdicts[i].reason and not verdicts[i].final:
                    retry.append(i)
            todo = retry
        for verdict in verdicts.values():
            for key, n in verdict.counts.items():
                ctx.count(key, n)
        return verdicts

    def ask_each(self, ctx: Context, todo: list[int], request: Callable[[int, int], Request],
                 accept: Callable[[int, Result], Verdict], **options) -> dict[int, Verdict]:
        """`ask_rows` with one request per item."""
        return self.ask_rows(ctx, todo, lambda i, attempt: [request(i, attempt)],
                             lambda i, results: accept(i, results[0]), **options)


class TeacherStage(Asks, MapStage):
    """k requests per row: `requests(row, attempt) -> list[Request]` and `accept(row, results) -> Verdict`; the
    verdict's values become the columns named in `provides` (typed by `dtypes`, else strings); a column the verdict
    leaves out (a failed request) keeps its input value, or null."""

    retries: int = 1
    batch_size = 64
    dtypes: dict = {}
    sees_failures = False  # True: `accept` also gets a row whose every request failed

    def begin(self, ctx: Context) -> None:
        """Before each batch: learn what the requests need from the teacher (its models)."""

    def requests(self, row: dict, attempt: int) -> list[Request]:
        raise NotImplementedError

    def accept(self, row: dict, results: list[Result]) -> Verdict:
        raise NotImplementedError

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        self.begin(ctx)
        rows = batch.to_dicts()
        verdicts = self.ask_rows(ctx, list(range(len(rows))), lambda i, attempt: self.requests(rows[i], attempt),
                                 lambda i, results: self.accept(rows[i], results), retries=self.retries,
                                 sees_failures=self.sees_failures)
        new = [verdicts[i] for i in range(len(rows))]
        columns = [pl.Series(name, [v.values.get(name, row.get(name)) for v, row in zip(new, rows)],
                             dtype=self.dtypes.get(name, pl.String)) for name in self.provides]
        return with_drops(batch.with_columns(*columns), [v.reason for v in new])
