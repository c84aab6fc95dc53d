"""Magpie (Xu et al., 2024): queries written by an aligned model from its own chat template's pre-query text.

MagpieSeeds:    nothing -> seed_id
MagpieDialogue: seed_id -> messages, source, meta (per turn: a query as a raw completion of the pre-query text,
                stopped at end-of-turn, then the answer through chat)
TagQueries:     messages -> input_quality, difficulty, task_category, safety, reward (asked of the judge)

With `turns` above 1 (Magpie-MT) the two stages repeat: the next query is a completion of the template's text after
the last answer. A query is refused with a reason (`pipelines.prompts.magpie.query_problem`, plus `language`), asked
again up to `retries` times with another seed, then dropped; a dialogue keeps the turns before a refused one.
The chat template comes from the embedded model's GGUF, from `chat_template` (a `.jinja` file or a
`tokenizer_config.json`), or the pre-query text is given as it is (`pre_query`, with `stop`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property

import polars as pl

from pipelines.core.config import max_tokens_setting, temperature_setting, top_p_setting
from pipelines.core.errors import ConfigError, TeacherError
from pipelines.core.stage import MESSAGES, Context, MapStage, Source, with_drops
from pipelines.prompts import ultrafeedback as F
from pipelines.prompts import magpie as M
from pipelines.teacher.wire import Request, Result
from pipelines.teacher.guards import trim_cut_answer
from pipelines.teacher.stage import Asks, Sampling, TeacherStage, Verdict


@dataclass
class MagpieSampling(Sampling):
    temperature: float = temperature_setting(1.0)  # Magpie samples queries at 1.0, top_p 1.0
    top_p: float = top_p_setting(1.0)
    max_tokens_query: int = max_tokens_setting(64, "tokens per generated query")
    max_tokens_answer: int = max_tokens_setting(192, "tokens per answer")
    answer_temperature: float = field(default=0.7, metadata={"help": "sampling temperature of the answers",
                                                             "range": "[0, 2]"})


@dataclass
class Template:
    """Where the pre-query text comes from: `pre_query` as given, else a chat template file, else the embedded
    model's own template (`embedded_model`)."""

    pre_query: str = ""
    stop: str = ""
    chat_template: str = ""
    embedded_model: str = ""
    system: str = ""

    @cached_property
    def source(self) -> tuple[str, dict]:
        if self.chat_template:
            return M.load_template(self.chat_template)
        if self.embedded_model:
            from pipelines.teacher.weights import chat_template

            return chat_template(self.embedded_model)
        raise ConfigError("magpie needs the teacher's chat template: --set chat_template=PATH (a .jinja file or "
                          "tokenizer_config.json) or pre_query=TEXT with stop=TOKEN")

    def prefix(self, history: list[dict]) -> str:
        if self.pre_query and not history:
            return self.pre_query
        template, tokens = self.source
        return M.pre_query(template, tokens, self.system, history)

    def end_of_turn(self) -> str:
        return self.stop or M.stop_of(*self.source)


@dataclass
class MagpieSeeds(Source):
    n_queries: int = 48
    seed: int = 0
    name = "seeds"
    provides = ("seed_id",)

    def read(self, ctx: Context):
        n = min(self.n_queries, ctx.limit or self.n_queries)
        ids = [f"magpie-{self.seed}-{i:07d}" for i in range(n)]  # each id seeds its own query samples
        yield pl.DataFrame({"seed_id": ids}, schema={"seed_id": pl.String})


@dataclass
class MagpieDialogue(Asks, MapStage):
    """Queries from the pre-query text, then answers, for `turns` exchanges (retries per query)."""

    template: Template
    sampling: MagpieSampling = field(default_factory=MagpieSampling)
    turns: int = 1
    retries: int = 2
    min_words: int = 4
    languages: tuple[str, ...] = ("en",)
    name = "dialogue"
    requires = ("seed_id",)
    provides = ("messages", "source", "meta")
    batch_size = 32
    prompt_files = ()  # the teacher reads only its own chat template (shown in the card) and our system prompt

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        rows = batch.to_dicts()
        history: list[list[dict]] = [[] for _ in rows]
        ended: list[str | None] = [None] * len(rows)
        refused: list[str | None] = [None] * len(rows)  # the last refused query: the quarantine shows it
        for turn in range(self.turns):
            self._ask(rows, history, ended, refused, turn, ctx)
            self._answer(rows, history, ended, refused, turn, ctx)
        system = [{"role": "system", "content": self.template.system}] if self.template.system else []
        out = batch.with_columns(
            pl.Series("messages", [system + h for h in history], dtype=MESSAGES),
            pl.Series("source", ["magpie"] * len(rows), dtype=pl.String),
            pl.Series("meta", [json.dumps({"seed_id": r["seed_id"], "turns": len(h) // 2, "ended": e,
                                           **({"refused_query": q} if e and q else {})})
                               for r, h, e, q in zip(rows, history, ended, refused)], dtype=pl.String))
        return with_drops(out, [e if not h else None for h, e in zip(history, ended)])

    def _ask(self, rows, history, ended, refused, turn, ctx) -> None:
        stop = self.template.end_of_turn()
        active = [i for i, e in enumerate(ended) if e is None]
        prefix = {i: self.template.prefix(history[i]) for i in active}  # rendered once per row and turn

        def request(i: int, attempt: int) -> Request:
            params = self.sampling.request_params(self.sampling.max_tokens_query,
                                                  f"{rows[i]['seed_id']}/q{turn}/{attempt}")
            return Request([], {**params, "stop": [stop]}, prompt=prefix[i])

        def accept(i: int, result: Result) -> Verdict:
            query = M.clean_query(result.text or "", stop)
            reason = M.query_problem(query, prefix[i], self.min_words)
            reason = reason or self._language_problem(query)
            if reason is None:
                history[i].append({"role": "user", "content": query})
            else:  # every refused attempt, re-asked or not: what each filter caught
                ctx.count(f"query_refused_{reason.split(':')[0]}")
                refused[i] = query
            return Verdict({"query": query}, reason)

        verdicts = self.ask_each(ctx, active, request, accept, retries=self.retries, desc=f"{self.name} query "
                                 f"{turn + 1}", counter="query_reasked")
        failed = [v.reason for v in verdicts.values() if v.reason and v.reason.startswith("request_failed")]
        if failed and len(failed) == len(verdicts) and ("404" in failed[0] or "405" in failed[0]):
            raise TeacherError(f"magpie needs raw text completions (/v1/completions), which the teacher refused "
                               f"({failed[0]}); chat-only APIs cannot serve it: use llama.cpp's server or vLLM")
        for i, verdict in verdicts.items():
            ended[i] = verdict.reason

    def _answer(self, rows, history, ended, refused, turn, ctx) -> None:
        system = [{"role": "system", "content": self.template.system}] if self.template.system else []

        def request(i: int, attempt: int) -> Request:
            params = self.sampling.request_params(self.sampling.max_tokens_answer, f"{rows[i]['seed_id']}/a{turn}")
            return Request(system + history[i], {**params, "temperature": self.sampling.answer_temperature})

        def accept(i: int, result: Result) -> Verdict:
            answer = trim_cut_answer(result.text or "", result.finish_reason)
            reason = M.answer_problem(answer)
            if reason is None:
                history[i].append({"role": "assistant", "content": answer})
            return Verdict(reason=reason)

        active = [i for i, e in enumerate(ended) if e is None]
        for i, verdict in self.ask_each(ctx, active, request, accept, retries=0,
                                        desc=f"{self.name} answer {turn + 1}").items():
            ended[i] = verdict.reason
            if verdict.reason:  # the refused answer's query goes too: a dialogue ends on an answer
                refused[i] = history[i].pop()["content"]

    def _language_problem(self, query: str) -> str | None:
        if not self.languages:
            return None
        import langid

        found = langid.classify(query)[0]
        return None if found in self.languages else f"language: {found}, not {', '.join(self.languages)}"


TAGS = M.TAGS


@dataclass
class TagQueries(TeacherStage):
    """Magpie's tags of each first query (input quality, difficulty, task category, safety), asked of the judge as
    JSON limited to Magpie's released values, and a reward: the judge's 1-9 rating of the first answer (the expected
    digit where the endpoint returns logprobs, as the ultrafeedback judge rates). A row whose tags cannot be read
    keeps null tags (counted `tags_unreadable`); tagging drops nothing."""

    name = "tags"
    requires = ("messages",)
    provides = (*TAGS, "reward")
    dtypes = {"reward": pl.Float64}
    batch_size = 32
    retries = 0
    sees_failures = True
    teacher_role = "judge"
    prompt_files = ("prompts/magpie.yaml",)

    def requests(self, row: dict, attempt: int) -> list[Request]:
        query, answer = first_exchange(row["messages"])
        return [M.tag_request(query), F.point_request(query, answer)]

    def accept(self, row: dict, results: list[Result]) -> Verdict:
        tags, reward = results
        ok = tags.error is None and isinstance(tags.data, dict)
        values = {tag: tags.data.get(tag) if ok else None for tag in TAGS}
        values["reward"] = None if reward.error else round(F.point_score(reward)[0], 3)
        return Verdict(values, counts={"tags_unreadable": int(not ok), "reward_unreadable": int(bool(reward.error))})


def first_exchange(messages: list[dict]) -> tuple[str, str]:
    """The first user turn and the first assistant turn of a dialogue."""
    return (next(m["content"] for m in messages if m["role"] == "user"),
            next(m["content"] for m in messages if m["role"] == "assistant"))
