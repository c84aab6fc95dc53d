"""Tool-use conversations whose calls were executed and checked (APIGen's format, execution and semantic checks).

SeedToolUse:  -> seed_id, domain, tools, kind, persona, follow_up (a tools file of the library or the user's, 1-4
              of its tools, a kind of request, a persona, and for a share of rows the kind of a follow-up)
AskToolRequest: seed_id, tools, kind, persona -> id, text (a user request of that kind, which names no tool)
UseTools:     id, text, tools, kind, domain, follow_up -> messages, tool_messages, rejected_tool_messages,
              failed_check, calls, follow_up (`samples` trajectories per request: rounds of grammar-enforced calls,
              run in the sandbox, then the final answer; a call asked for again with the same arguments is left out,
              and a round of only such calls ends the calling; each trajectory checked; the first that passes every
              check is the row, the first that fails one its rejected side). A row with a `follow_up` kind goes on:
              the teacher, as the user, writes a follow-up of that kind to the conversation so far, and the
              assistant calls and answers again, checked the same way; a trajectory whose follow-up fails a check
              (or cannot be written) keeps its first exchange, and the report counts why.

The checks, each a drop reason naming the call: `unknown_tool`, `bad_arguments` (the schema errors), `execution_error`
(the tool's exception), `timeout`, `killed`, `output_too_large`, `over_call_cap` (more than `max_calls` calls),
`missed_call` (a request that needs a tool got none), `needless_call` (a request that needs none got one),
`answer_ignores_result` (the final answer states none of a result's values, or, with `judge`, the teacher judges
that it misstates or ignores them). A row is kept when one of its trajectories passes every check; else it is
dropped with its first trajectory's failure. The judge is asked about every answer to calls, the ones the string
check failed too, so the report measures the two against each other.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.config import max_tokens_setting
from pipelines.core.errors import ConfigError
from pipelines.data import load_list
from pipelines.core.stage import MESSAGES, Context, MapStage, Source, Stage, split_drops, with_drops
from pipelines.prompts import tool_use as T
from pipelines.stages.export import separate_splits
from pipelines.stages.export_prefs import parts
from pipelines.stages.labels import ReadsLabels, label_rows, row_labels
from pipelines.teacher.guards import is_looping, trim_cut_answer
from pipelines.teacher.stage import Asks, Sampling, TeacherStage, Verdict
from pipelines.teacher.wire import Request, Result
from pipelines.tools import chat, library_files
from pipelines.tools.sandbox import Limits, Sandbox
from pipelines.tools.validate import CallError, check_arguments, find_tool
from schemas import TOOL_MESSAGE, prompt_id, text_id

KIND_WEIGHTS = {"single": 0.35, "parallel": 0.2, "sequential": 0.15, "no_tool": 0.15, "unserviceable": 0.15}
FOLLOW_UP_WEIGHTS = {"single": 0.7, "no_tool": 0.3}


@dataclass
class ToolUseSampling(Sampling):
    max_tokens_request: int = max_tokens_setting(96, "tokens per user request")
    max_tokens_calls: int = max_tokens_setting(256, "tokens per decision (the JSON of the next calls)")
    max_tokens_answer: int = max_tokens_setting(200, "tokens per final answer")
    max_tokens_judge: int = max_tokens_setting(128, "tokens per judgement of an answer (a reason and a verdict)")


def tools_files(names: tuple[str, ...]) -> dict[str, Path]:
    """Tools files by domain: a shipped one by name (`shop`) or a user's Python file by path."""
    shipped = library_files()
    chosen = {}
    for name in names or tuple(shipped):
        if name in shipped:
            chosen[name] = shipped[name]
        elif Path(name).suffix == ".py":
            chosen[Path(name).stem] = Path(name).resolve()
        else:
            raise ConfigError(f"tools {name!r}: name a shipped tools file ({', '.join(shipped)}) or a .py file")
    return chosen


@dataclass
class SeedToolUse(Source):
    n_requests: int
    tools: tuple[str, ...] = ()
    seed: int = 0
    follow_ups: float = 0.0  # the share of rows whose user follows up once
    name = "seeds"
    provides = ("seed_id", "domain", "tools", "kind", "persona", "follow_up")

    def read(self, ctx: Context):
        files = tools_files(self.tools)
        rng = random.Random(self.seed)
        follow_rng = random.Random(f"{self.seed}/follow_up")  # its own draws: the share leaves the other draws as
        # they were
        personas = load_list("personas.json")
        described = {}
        for domain, path in files.items():
            with Sandbox(path) as box:  # a tools file is imported in the sandbox only, never here
                described[domain] = box.describe()
            if not described[domain]:
                raise ConfigError(f"tools file {path} defines no TOOLS")
        kinds, weights = list(KIND_WEIGHTS), list(KIND_WEIGHTS.values())
        rows = []
        for n in range(min(self.n_requests, ctx.limit or self.n_requests)):
            domain = list(files)[n % len(files)]
            offered = described[domain]
            chosen = rng.sample(offered, rng.randint(1, min(4, len(offered))))
            kind = rng.choices(kinds, weights)[0]
            follows = follow_rng.random() < self.follow_ups
            follow_up = follow_rng.choices(list(FOLLOW_UP_WEIGHTS), list(FOLLOW_UP_WEIGHTS.values()))[0]
            rows.append({"seed_id": hashlib.sha256(f"{self.seed}/{n}/{domain}".encode()).hexdigest()[:16],
                         "domain": domain, "tools": json.dumps(chosen, ensure_ascii=False), "kind": kind,
                         "persona": rng.choice(personas), "follow_up": follow_up if follows else None})
        yield pl.DataFrame(rows, schema={c: pl.String for c in self.provides})


@dataclass
class AskToolRequest(TeacherStage):
    sampling: ToolUseSampling = field(default_factory=ToolUseSampling)
    retries: int = 1
    name = "request"
    requires = ("seed_id", "tools", "kind", "persona")
    provides = ("id", "text")
    prompt_files = (T.PROMPT_FILE,)

    def requests(self, row: dict, attempt: int) -> list[Request]:
        return [Request(T.request_messages(json.loads(row["tools"]), row["kind"], row["persona"]),
                        self.sampling.request_params(self.sampling.max_tokens_request,
                                                     f"{row['seed_id']}/r/{attempt}"))]

    def accept(self, row: dict, results: list[Result]) -> Verdict:
        request = T.clean_request(trim_cut_answer(results[0].text or "", results[0].finish_reason))
        return Verdict({"id": text_id(request), "text": request},
                       T.request_problem(request, json.loads(row["tools"])))


@dataclass
class Trajectory:
    """One attempt at a request: the OpenAI turns so far, the calls made with what they returned, the first check
    it failed; with a follow-up, the exchange before it (`earlier`) and where its calls start in `done`."""

    turns: list[dict]
    request: str = ""  # the user message now answered
    kind: str = ""  # its kind
    start: int = 0  # its calls are done[start:]
    earlier: dict | None = None  # the first exchange: {"request", "done", "answer", "turns"}
    follow_up: str | None = None  # the follow-up's kind once one was asked
    done: list[dict] = field(default_factory=list)
    failure: str | None = None
    finished: bool = False  # no more calls (it answers next, or it failed)
    repeats: int = 0  # calls asked for again with the same arguments, left out of the turns
    pending: list = field(default_factory=list)  # calls of simulated tools this round: (id, tool, arguments)
    simulated: int = 0  # calls whose result the teacher played

    def fail(self, reason: str) -> None:
        self.failure, self.finished = reason, True

    def ask_next(self, request: str, kind: str) -> None:
        """The user follows up: the exchange so far is kept in `earlier`, the follow-up is answered next."""
        self.earlier = {"request": self.request, "done": list(self.done), "answer": self.turns[-1]["content"],
                        "turns": list(self.turns)}
        self.turns.append(chat.turn("user", request))
        self.request, self.kind, self.follow_up, self.start, self.finished = request, kind, kind, len(self.done), False

    def keep_first(self) -> str:
        """A failed follow-up: back to the first exchange, which passed its checks; returns the follow-up's check."""
        check = (self.failure or "").split(":")[0]
        self.turns, self.done = self.earlier["turns"], self.earlier["done"]
        self.failure, self.follow_up, self.finished = None, None, True
        return check

    @property
    def calls(self) -> list[dict]:
        """The calls made for the user message now answered."""
        return self.done[self.start:]


@dataclass
class UseTools(Asks, MapStage):
    sampling: ToolUseSampling = field(default_factory=ToolUseSampling)
    samples: int = 2
    max_rounds: int = 3
    max_calls: int = 8
    timeout: float = 5.0
    tools: tuple[str, ...] = ()
    judge: bool = True
    calls_via: str = "schema"  # or "tools": OpenAI's tools/tool_choice fields, the endpoint parses the calls
    name = "use_tools"
    requires = ("id", "text", "tools", "kind", "domain")
    provides = ("messages", "tool_messages", "rejected_tool_messages", "chosen_tool_messages", "failed_check",
                "calls", "simulated", "follow_up", "source", "meta")
    batch_size = 16
    prompt_files = (T.PROMPT_FILE,)

    def summary(self, counters: dict) -> dict:
        """Pass rates per check (of every trajectory tried), calls per kept row, and the tools called."""
        tried = counters.get("trajectories", 0)
        checks = {k.removeprefix("check_"): n for k, n in counters.items() if k.startswith("check_")}
        return {"tool_checks": {
            "trajectories": tried, "samples_per_request": self.samples,
            "passed": round(checks.get("passed", 0) / tried, 4) if tried else None,
            "failed_by_check": {k: n for k, n in sorted(checks.items(), key=lambda x: -x[1]) if k != "passed"},
            "requests_verified": counters.get("requests_verified", 0),
            "calls_by_tool": {k.removeprefix("called|"): n for k, n in sorted(counters.items())
                              if k.startswith("called|")},
            "simulated": counters.get("rows_simulated", 0),
            "answer_judge": {k.removeprefix("judge|"): n for k, n in sorted(counters.items())
                             if k.startswith("judge|")},
            "follow_ups": {"written": counters.get("follow_ups_written", 0),
                           "unwritten": counters.get("follow_ups_unwritten", 0),
                           "rows": counters.get("rows_with_follow_up", 0),
                           "failed_by_check": {k.removeprefix("follow_up_failed|"): n for k, n in sorted(
                               counters.items()) if k.startswith("follow_up_failed|")}}}}

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        rows = batch.to_dicts()
        tools = [json.loads(r["tools"]) for r in rows]
        items = [(r, s) for r in range(len(rows)) for s in range(self.samples)]
        paths = tools_files(self.tools)
        states = [Trajectory([chat.turn("user", rows[r]["text"])], rows[r]["text"], rows[r]["kind"]) for r, _ in items]
        boxes: dict[str, Sandbox] = {}
        try:
            for part in (0, 1):  # the request, then a follow-up where the row has one
                if part:
                    self._follow_up(ctx, rows, tools, items, states)
                for round_ in range(part * self.max_rounds, (part + 1) * self.max_rounds):
                    active = [i for i, t in enumerate(states) if not t.finished]
                    if not active:
                        break
                    self._decide(ctx, rows, tools, items, states, active, round_, boxes, paths)
                self._answer(ctx, rows, items, states, part)
                for state in states:
                    if part and state.failure and state.follow_up:
                        ctx.count(f"follow_up_failed|{state.keep_first()}")
        finally:
            for box in boxes.values():
                box.close()
        return self._rows(batch, rows, items, states, ctx)

    def _decide(self, ctx, rows, tools, items, states, active, round_, boxes, paths) -> None:
        def request(i: int, attempt: int) -> Request:
            r, s = items[i]
            params = self.sampling.request_params(self.sampling.max_tokens_calls, f"{rows[r]['id']}/{s}/c{round_}")
            if self.calls_via == "tools":
                return Request(T.native_messages(states[i].turns),
                               {**params, "tools": T.offered(tools[r]), "tool_choice": "auto"})
            return Request(T.decide_messages(tools[r], states[i].request, states[i].calls, states[i].earlier),
                           params, schema=T.calls_schema(tools[r]))

        def accept(i: int, result: Result) -> Verdict:
            if self.calls_via == "tools" and result.error is None:
                wanted[i] = T.native_calls(result.tool_calls)
                return Verdict()
            calls = T.calls_of(result.data)
            if calls is None:
                return Verdict(reason=f"unparsed_calls: {(result.error or 'no JSON with tool_calls')[:200]}")
            wanted[i] = calls
            return Verdict()

        wanted: dict[int, list] = {}
        verdicts = self.ask_each(ctx, active, request, accept, retries=0, desc=f"{self.name} calls {round_ + 1}")
        for i in active:
            state = states[i]
            if verdicts[i].reason:
                state.fail(verdicts[i].reason)
                continue
            calls = wanted[i]
            if not calls:
                state.finished = True
                continue
            r, _ = items[i]
            self._run_calls(state, calls, tools[r], rows[r], round_, boxes, paths)
            state.finished = state.finished or (round_ + 1) % self.max_rounds == 0
        self._simulate(ctx, rows, items, states, round_)

    def _simulate(self, ctx, rows, items, states, round_) -> None:
        """The teacher plays the simulated tools called this round: a JSON result for each call, all asked at once,
        held to the tool's `returns` schema when it declares one (a bare object schema lets a small teacher run on
        past its token budget), asked once more with another seed when the answer is not a JSON object."""
        todo = [(i, k) for i, t in enumerate(states) if t.failure is None for k in range(len(t.pending))]

        def request(n: int, attempt: int) -> Request:
            i, k = todo[n]
            cid, tool, arguments = states[i].pending[k]
            seed = f"{cid}/sim/{round_}" + (f"/{attempt}" if attempt else "")
            return Request(T.simulate_messages(tool, arguments),
                           self.sampling.request_params(self.sampling.max_tokens_answer, seed),
                           schema=tool.get("returns") or {"type": "object"})

        def accept(n: int, result: Result) -> Verdict:
            if not isinstance(result.data, dict):
                return Verdict(reason=f"simulation_failed: {(result.error or 'no JSON object')[:200]}")
            i, k = todo[n]
            cid, tool, arguments = states[i].pending[k]
            states[i].done.append({"name": tool["function"]["name"], "arguments": arguments, "result": result.data})
            states[i].turns.append(chat.tool_result(cid, result.data))
            states[i].simulated += 1
            return Verdict()

        verdicts = self.ask_each(ctx, list(range(len(todo))), request, accept, retries=1,
                                 desc=f"{self.name} simulated tools {round_ + 1}") if todo else {}
        for n, verdict in verdicts.items():
            state = states[todo[n][0]]
            if verdict.reason and state.failure is None:
                state.fail(verdict.reason)
        for state in states:
            state.pending = []

    def _run_calls(self, state: Trajectory, calls: list, tools: list[dict], row: dict, round_: int, boxes,
                   paths) -> None:
        """Check the calls as data, run the good ones, append the assistant's call turn and the tool turns. The first
        failed check ends the trajectory: its last turn is then the call that failed."""
        if len(state.done) + len(calls) > self.max_calls:
            state.fail(f"over_call_cap: {len(state.done) + len(calls)} calls (max {self.max_calls})")
            return
        made = {chat.call_key(d["name"], d["arguments"]) for d in state.done}
        fresh = [c for c in calls if chat.call_key(c.get("name"), c.get("arguments")) not in made]
        state.repeats += len(calls) - len(fresh)
        if not fresh:  # only calls already made, with the same arguments: the calling is over, it answers next
            state.finished = True
            return
        named = [(chat.call_id(row["id"], round_, k), c.get("name"), c.get("arguments")) for k, c in enumerate(fresh)]
        state.turns.append(chat.assistant_calls(
            [(cid, str(name), arguments if isinstance(arguments, dict) else {}) for cid, name, arguments in named]))
        checked = []
        for cid, name, arguments in named:
            try:
                checked.append((cid, name, check_arguments(find_tool(tools, name), arguments)))
            except CallError as error:
                state.fail(f"{error.reason}: {error.detail} (call {name}({json.dumps(arguments)[:200]}))")
                return
        simulated = {t["function"]["name"]: t for t in tools if t.get("simulated")}
        state.pending = [(cid, simulated[name], arguments) for cid, name, arguments in checked if name in simulated]
        checked = [c for c in checked if c[1] not in simulated]
        if not checked:
            return
        domain = row["domain"]
        if domain not in boxes:
            boxes[domain] = Sandbox(paths[domain], Limits(timeout=self.timeout, max_calls=self.max_calls))
        outcomes = boxes[domain].run([(name, arguments) for _, name, arguments in checked])
        for (cid, name, arguments), outcome in zip(checked, outcomes):
            if not outcome.ok:
                state.fail(f"{outcome.status}: {outcome.error[:300]} (call {name}({json.dumps(arguments)[:200]}))")
                return
            state.done.append({"name": name, "arguments": arguments, "result": outcome.result})
            state.turns.append(chat.tool_result(cid, outcome.result))

    def _answer(self, ctx, rows, items, states, part: int) -> None:
        todo = [i for i, t in enumerate(states) if t.failure is None and (t.follow_up is not None) == bool(part)]

        def request(i: int, attempt: int) -> Request:
            r, s = items[i]
            return Request(T.answer_messages(states[i].request, states[i].calls, states[i].earlier),
                           self.sampling.request_params(self.sampling.max_tokens_answer,
                                                        f"{rows[r]['id']}/{s}/a" + (f"{part}" if part else "")))

        def accept(i: int, result: Result) -> Verdict:
            answer = trim_cut_answer(result.text or "", result.finish_reason).strip()
            states[i].turns.append(chat.turn("assistant", answer))
            return Verdict(reason=answer_problem(answer, states[i].kind, states[i].calls))

        desc = f"{self.name} {'follow-up ' if part else ''}answers"
        for i, verdict in self.ask_each(ctx, todo, request, accept, retries=0, desc=desc).items():
            states[i].failure = verdict.reason
        if self.judge:
            self._judge(ctx, rows, items, states, [i for i in todo if states[i].calls and (
                states[i].failure is None or states[i].failure.startswith("answer_ignores_result"))], part)

    def _judge(self, ctx, rows, items, states, todo: list[int], part: int) -> None:
        """The teacher judges whether each answer states the results faithfully; counted against the string
        check, which it joins: an answer fails when either says it ignores the results."""

        def request(i: int, attempt: int) -> Request:
            r, s = items[i]
            return Request(T.judge_messages(states[i].request, states[i].calls, states[i].turns[-1]["content"]),
                           self.sampling.request_params(self.sampling.max_tokens_judge,
                                                        f"{rows[r]['id']}/{s}/j{part}"), schema=T.JUDGE_SCHEMA)

        def accept(i: int, result: Result) -> Verdict:
            if not isinstance(result.data, dict) or not isinstance(result.data.get("faithful"), bool):
                ctx.count("judge|unparsed")
                return Verdict()
            judged, string = result.data["faithful"], states[i].failure is None
            ctx.count(f"judge|{'pass' if judged else 'fail'}_{'pass' if string else 'fail'}")
            if string and not judged:
                states[i].failure = f"answer_ignores_result: the judge: {str(result.data.get('reason'))[:200]}"
            return Verdict()

        if todo:
            self.ask_each(ctx, todo, request, accept, retries=0, desc=f"{self.name} judge")

    def _follow_up(self, ctx, rows, tools, items, states) -> None:
        """The teacher, as the user, writes each passing trajectory's follow-up of the row's `follow_up` kind."""
        todo = [i for i, t in enumerate(states) if t.failure is None and rows[items[i][0]].get("follow_up")]

        def request(i: int, attempt: int) -> Request:
            r, s = items[i]
            return Request(T.follow_up_messages(tools[r], states[i].request, states[i].turns[-1]["content"],
                                                rows[r]["follow_up"], rows[r].get("persona") or ""),
                           self.sampling.request_params(self.sampling.max_tokens_request,
                                                        f"{rows[r]['id']}/{s}/f/{attempt}"))

        def accept(i: int, result: Result) -> Verdict:
            r, _ = items[i]
            text = T.clean_request(trim_cut_answer(result.text or "", result.finish_reason))
            problem = T.request_problem(text, tools[r])
            if problem is None:
                states[i].ask_next(text, rows[r]["follow_up"])
            return Verdict(reason=problem)

        for i, verdict in self.ask_each(ctx, todo, request, accept, retries=1,
                                        desc=f"{self.name} follow-ups").items():
            ctx.count("follow_ups_written" if verdict.reason is None else "follow_ups_unwritten")

    def _rows(self, batch, rows, items, states, ctx) -> pl.DataFrame:
        values = {c: [] for c in ("messages", "tool_messages", "rejected_tool_messages", "failed_check", "calls",
                                  "simulated", "follow_up", "chosen_tool_messages")}
        reasons = []
        for r, row in enumerate(rows):
            mine = [states[i] for i, (rr, _) in enumerate(items) if rr == r]
            for state in mine:
                ctx.count("trajectories")
                ctx.count("repeated_calls_left_out", state.repeats)
                ctx.count(f"check_{(state.failure or 'passed').split(':')[0]}")
            good = [t for t in mine if t.failure is None]
            bad = [t for t in mine if t.failure is not None]
            shown = good[0] if good else mine[0]
            values["messages"].append(chat.canonical(shown.turns))
            values["tool_messages"].append(json.dumps(shown.turns, ensure_ascii=False))
            values["rejected_tool_messages"].append(json.dumps(bad[0].turns, ensure_ascii=False) if good and bad
                                                    else None)
            # a pair holds the first exchange on both sides (a rejected trajectory failed there)
            values["chosen_tool_messages"].append(json.dumps(shown.earlier["turns"], ensure_ascii=False)
                                                  if good and bad and shown.follow_up else None)
            values["failed_check"].append(bad[0].failure if good and bad else None)
            values["calls"].append(len(shown.done))
            values["simulated"].append(shown.simulated > 0)
            values["follow_up"].append(shown.follow_up if good else None)
            ctx.count("rows_with_follow_up", bool(good) and shown.follow_up is not None)
            ctx.count("rows_simulated", bool(good) and shown.simulated > 0)
            for call in shown.done if good else []:
                ctx.count(f"called|{call['name']}")
            reasons.append(None if good else shown.failure)
            ctx.count("requests_verified", bool(good))
        return with_drops(batch.with_columns(
            pl.Series("messages", values["messages"], dtype=MESSAGES),
            *(pl.Series(k, values[k], dtype=pl.String) for k in ("tool_messages", "rejected_tool_messages",
                                                                 "failed_check", "follow_up",
                                                                 "chosen_tool_messages")),
            pl.Series("calls", values["calls"], dtype=pl.Int64),
            pl.Series("simulated", values["simulated"], dtype=pl.Boolean),
            pl.Series("source", [f"tool_use:{r['domain']}" for r in rows], dtype=pl.String),
            pl.Series("meta", [json.dumps({k: r.get(k) for k in ("seed_id", "domain", "kind", "persona",
                                                                   "follow_up")})
                               for r in rows], dtype=pl.String)), reasons)


def answer_problem(answer: str, kind: str, done: list[dict]) -> str | None:
    """Why a final answer fails its checks, or None."""
    if not answer:
        return "empty_answer: no text"
    if is_looping(answer):
        return "repeated: the answer loops"
    if T.NARRATES.match(answer):
        return "narrates: the answer describes the user instead of answering them"
    if kind in T.NEEDS_TOOLS and not done:
        return f"missed_call: a {kind} request answered without calling a tool"
    if kind not in T.NEEDS_TOOLS and done:
        return f"needless_call: a {kind} request got {len(done)} call(s) ({done[0]['name']})"
    for call in done:
        values = result_values(call["result"], call["arguments"])
        if values and not any(mentions(answer, v) for v in values):
            return f"answer_ignores_result: none of {call['name']}'s values ({', '.join(map(str, values[:4]))}) " \
                   "is in the answer"
    return None


def result_values(result, arguments: dict, limit: int = 40) -> list:
    """A result's scalar values an answer could quote: numbers and short strings, not the call's own arguments."""
    given = {json.dumps(v) for v in arguments.values()}
    out, stack = [], [result]
    while stack and len(out) < limit:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, (int, float)) and math.isfinite(item) and json.dumps(item) not in given:
            out.append(item)
        elif isinstance(item, str) and 0 < len(item) <= 60 and json.dumps(item) not in given \
                and not IDENTIFIER.match(item):  # a column name or a status word would match by chance
            out.append(item)
    return out


NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
IDENTIFIER = re.compile(r"^[a-z_]{1,20}$")


def mentions(answer: str, value) -> bool:
    """Whether `answer` states `value`: a string case-insensitively, a number as written with or without thousands
    separators and to the decimals it is given in (59.97 in "$59.97", 1000 in "1,000", 16.09344 in "16.09")."""
    if isinstance(value, str):
        return value.lower() in answer.lower()
    numbers = [float(n) for n in NUMBER.findall(re.sub(r"(?<=\d),(?=\d{3}\b)", "", answer))]
    return any(abs(n - value) <= 0.5 * 10 ** -decimals(n) + 1e-9 for n in numbers)


def decimals(number: float) -> int:
    text = repr(number)
    return len(text.split(".")[1]) if "." in text and not text.endswith(".0") else 0


@dataclass
class ExportToolUse(ReadsLabels, Stage):
    """Write `train_sft`/`test_sft` (the verified conversations) and `train_prefs`/`test_prefs` (a verified
    trajectory chosen over one that failed a check, for the same request) with `messages` in OpenAI's tool shape
    and a `tools` column (the JSON Schemas, a JSON string as TRL reads it). A request's part comes from a hash of its
    prompt_id; near-duplicate requests that straddle train and test move to train."""

    test_fraction: float = 0.1
    leakage_threshold: float = 0.8
    name = "export"
    requires = ("id", "text", "messages", "tool_messages", "tools")
    provides = ("prompt", "prompt_id", "split")

    def summary(self, counters: dict) -> dict:
        return {"leakage": self._leakage, "rows": self._counts, **({"review": self._review} if self._review else {})}

    def run(self, batches, ctx: Context):
        frames = [b for b in batches if b.height]
        data = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame(schema={
            "id": pl.String, "text": pl.String, "messages": MESSAGES, "tool_messages": pl.String, "tools": pl.String,
            "rejected_tool_messages": pl.String, "failed_check": pl.String, "kind": pl.String, "domain": pl.String,
            "calls": pl.Int64, "follow_up": pl.String})
        data, self._review = label_rows(data, row_labels(ctx.run_dir))
        data, reviewed_out = split_drops(data)
        prompt_ids = [prompt_id(t) for t in data["text"].to_list()]
        splits, self._leakage = separate_splits(data["text"].fill_null(""), [f"{p}_sft" for p in parts(
            prompt_ids, self.test_fraction)], self.leakage_threshold, ctx)
        data = data.with_columns(pl.Series("prompt", data["text"], dtype=pl.String),
                                 pl.Series("prompt_id", prompt_ids, dtype=pl.String),
                                 pl.Series("split", [s.split("_")[0] for s in splits], dtype=pl.String))
        out_dir = ctx.run_dir / "export"
        shutil.rmtree(out_dir, ignore_errors=True)
        (out_dir / "data").mkdir(parents=True)
        self._counts = {}
        for part in ("train", "test"):
            rows = data.filter(pl.col("split") == part).to_dicts()
            self._write(out_dir, f"{part}_sft", SFT_SCHEMA, [sft_row(r) for r in rows])
            self._write(out_dir, f"{part}_prefs", PREFS_SCHEMA,
                        [pref_row(r) for r in rows if r.get("rejected_tool_messages")])
        yield data if reviewed_out is None else pl.concat([data, reviewed_out], how="diagonal_relaxed")

    def _write(self, out_dir: Path, split: str, schema: pa.Schema, rows: list[dict]) -> None:
        if rows:
            table = pa.Table.from_pylist(rows, schema=schema)
            pq.write_table(table, out_dir / "data" / f"{split}-00000-of-00001.parquet")
            self._counts[split] = len(rows)


COMMON = [("prompt", pa.string()), ("prompt_id", pa.string()), ("tools", pa.string()), ("kind", pa.string()),
          ("follow_up", pa.string()), ("domain", pa.string())]
SFT_SCHEMA = pa.schema([*COMMON, ("messages", pa.list_(TOOL_MESSAGE)), ("calls", pa.int64()),
                        ("simulated", pa.bool_())])
PREFS_SCHEMA = pa.schema([*COMMON, ("chosen", pa.list_(TOOL_MESSAGE)), ("rejected", pa.list_(TOOL_MESSAGE)),
                          ("messages", pa.list_(TOOL_MESSAGE)), ("failed_check", pa.string())])


def sft_row(row: dict) -> dict:
    return {**common(row), "messages": json.loads(row["tool_messages"]), "calls": row["calls"],
            "simulated": bool(row.get("simulated"))}


def common(row: dict) -> dict:
    """The columns both splits share, `tools` as OpenAI definitions (without our `simulated` and `returns`)."""
    return {**{k: row.get(k) for k, _ in COMMON}, "tools": json.dumps(T.offered(json.loads(row["tools"])),
                                                                      ensure_ascii=False)}


def pref_row(row: dict) -> dict:
    chosen = json.loads(row.get("chosen_tool_messages") or row["tool_messages"])
    return {**common(row), "chosen": chosen, "rejected": json.loads(row["rejected_tool_messages"]),
            "messages": chosen, "failed_check": row["failed_check"]}
