"""Orca-style explanation tuning (Mukherjee et al., 2023, arXiv:2306.02707; the OpenOrca reproduction).

SeedOrca:       sources -> prompt_id, prompt, prompt_kind, system_id, system, source, meta
ExplainAnswers: prompt, system -> messages ([system, user, assistant]), meta

Orca asks a strong teacher to answer instruction-data prompts (FLAN tasks) under one of 16 system messages that ask
for explanations: think step by step and justify, answer as to a five-year-old, first give the multiple-choice answer
and then say why the others are wrong... Ours are 12 project-written messages in the same spirit
(`pipelines/prompts/orca_system_messages.json`), each naming the prompt kinds it suits:

- A prompt's kind is `multiple_choice` when it offers lettered options (`(A) ... (B) ...`) or says `Options:`, else
  `math` when it holds a number and a quantity question or an arithmetic expression (`how many`, `solve`, `3 + 4`),
  else `general` (`prompt_kind`).
- The system message is drawn from the messages that suit the kind by a hash of the seed and the prompt_id, so a
  prompt keeps its message on every run and the draws spread evenly. Math prompts draw only from the step-by-step
  messages, as Orca gave chain-of-thought tasks its step-by-step messages.

The prompt is the first user turn of each ingested record (any format `Ingest` reads); the record's reference answer
(the assistant turn after it) is kept in `meta.reference`, never shown to the teacher. `n_prompts` keeps the prompts
whose hash of seed and prompt_id is lowest, so a mixture of sources is sampled evenly and the sample is stable; a
record repeating a kept prompt is dropped as `duplicate_prompt`.

Answers are guarded (`check_answer`): one that is empty, too short to explain anything, a refusal, a copy of the
prompt, or a loop on one sentence is asked again (`retries`) and then dropped with its reason. One cut at
`max_tokens` is not asked again (the next would most likely be cut too, at full price) and is dropped by default:
explanation tuning teaches a model to reason to a conclusion, and a cut answer usually lacks its conclusion (a math
solution without its result). `keep_truncated` keeps it, trimmed to its last full sentence.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import polars as pl

from pipelines.core.config import max_tokens_setting
from pipelines.core.stage import DROP, MESSAGES, Context, Source
from pipelines.stages.ingest import Ingest
from pipelines.teacher.wire import Request, Result
from pipelines.teacher.guards import REFUSAL, echoes_prompt, is_looping, trim_cut_answer, unit_hash
from pipelines.teacher.stage import Sampling, TeacherStage, Verdict
from schemas import prompt_id as hash_prompt

SYSTEM_MESSAGES = "prompts/orca_system_messages.json"  # relative to pipelines/, as prompt_files are
DEFAULT_PROMPTS = "orca_prompts.jsonl"
MIN_WORDS = 4  # fewer words cannot hold an answer and its explanation ("(B) a refrigerator." is 3)

OPTION_LETTER = re.compile(r"(?:^|\s)\(([A-Ea-e])\)|^\s*([A-E])[).:]\s", re.M)
OPTIONS_WORD = re.compile(r"\b(options|choices|choose from|select from)\s*:", re.I)
NUMBER = re.compile(r"\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|hundred|"
                    r"thousand|half|twice|double|dozen)\b", re.I)
QUANTITY = re.compile(r"\b(how (many|much|far|long|old|fast|tall|heavy|often)|calculate|compute|solve|"
                      r"what('s|\s+(is|was|are|were|will|would|does|did))?(\s+be)?\s+(the\s+|her\s+|his\s+|its\s+|"
                      r"their\s+|my\s+)?([a-z]+\s+)?(total|sum|average|mean|product|difference|cost|price|area|"
                      r"perimeter|length|distance|speed|value|number|percent|percentage|fraction|profit|amount|ratio|"
                      r"result|salary|age|weight|height)|what is -?\d)\b|[\w)]\s*=\s*-?\d", re.I)
MATH_TASK = re.compile(r"\b(math|arithmetic|equations?|algebra|word problem|calculate|compute)\b|\bsolve for\b", re.I)
MATH_CHARS = 1000  # longer prompts are passages with numbers in them (news, emails), rarely word problems
LABEL = re.compile(r"^\s*(\*\*)?(assistant|answer)\s*:\s*(\*\*)?\s*", re.I)


@lru_cache(maxsize=1)
def system_messages() -> tuple[dict, ...]:
    """The project's system messages: `{"id", "name", "suits": [kinds], "text"}` each."""
    return tuple(json.loads(resources.files("pipelines").joinpath(SYSTEM_MESSAGES).read_text()))


def default_prompts() -> str:
    """Path of the project's prompt set (48 FLAN-like tasks in Alpaca format), read when no sources are given."""
    return str(resources.files("pipelines.data").joinpath(DEFAULT_PROMPTS))


def prompt_kind(prompt: str) -> str:
    """`multiple_choice`, `math` or `general`.

    'Where is milk kept?\\n(A) a cupboard\\n(B) a fridge' -> 'multiple_choice'
    'Sam has $50 and buys 3 books at $12. How much is left?' -> 'math'
    'Summarize the text in one sentence.' -> 'general'
    """
    letters = {a.upper() or b for a, b in OPTION_LETTER.findall(prompt)}
    if len(letters) >= 2 or OPTIONS_WORD.search(prompt):
        return "multiple_choice"
    if MATH_TASK.search(prompt.split("\n\n", 1)[0]):
        return "math"
    if len(prompt) <= MATH_CHARS and NUMBER.search(prompt) and QUANTITY.search(prompt):
        return "math"
    return "general"


def pick_system(pid: str, kind: str, seed: int) -> dict:
    """The system message for a prompt: one of those suiting its kind, drawn by a hash of seed and prompt_id."""
    pool = [m for m in system_messages() if kind in m["suits"]]
    return pool[int(unit_hash(f"{seed}:system:{pid}", digits=13) * len(pool))]


def split_record(messages: list[dict]) -> tuple[str | None, str, str]:
    """(first user turn, the assistant turn after it or '', a system message before it or '')."""
    for i, message in enumerate(messages):
        if message["role"] == "user":
            after = next((m["content"] for m in messages[i + 1:] if m["role"] == "assistant"), "")
            before = next((m["content"] for m in messages[:i] if m["role"] == "system"), "")
            return message["content"], after, before
    return None, "", ""


def parse_answer(text: str | None, finish_reason: str | None, keep_truncated: bool) -> str:
    """Strip the answer and a leading 'Assistant:' label; a cut answer is trimmed to its last full sentence when
    it is kept. 'Answer: 6 boxes, since 24 / 4 = 6.' -> '6 boxes, since 24 / 4 = 6.'"""
    text = LABEL.sub("", (text or "").strip())
    return trim_cut_answer(text, finish_reason) if keep_truncated else text


def check_answer(answer: str, prompt: str, finish_reason: str | None = "stop", keep_truncated: bool = False) \
        -> str | None:
    """Reason an answer is unusable for explanation tuning, or None."""
    if not answer.strip():
        return "empty: no answer text"
    if finish_reason == "length" and not keep_truncated:
        return "truncated: answer stopped at max_tokens"
    if len(answer.split()) < MIN_WORDS:
        return f"too_short: fewer than {MIN_WORDS} words, no room for an explanation"
    if REFUSAL.search(answer):
        return "refusal: the answer declines the task"
    if echoes_prompt(answer, prompt):
        return "repeats_prompt: the answer mostly repeats the prompt"
    if is_looping(answer):
        return "looping: the answer repeats one sentence"
    return None


@dataclass
class AnswerSampling(Sampling):
    max_tokens: int = max_tokens_setting(256, "tokens per answer")

    def params(self, seed: str) -> dict:
        return self.request_params(self.max_tokens, seed)


PROMPT_SCHEMA = {"prompt_id": pl.String, "prompt": pl.String, "prompt_kind": pl.String, "system_id": pl.String,
                 "system": pl.String, "source": pl.String, "meta": pl.String, DROP: pl.String,
                 "locator": pl.String, "raw": pl.String}


@dataclass
class SeedOrca(Source):
    sources: tuple[str, ...] = ()
    n_prompts: int = 48
    seed: int = 0
    redact: str = "none"
    name = "prompts"
    provides = ("prompt_id", "prompt", "prompt_kind", "system_id", "system", "source", "meta")

    def ingest(self) -> Ingest:
        return Ingest(sources=self.sources or (default_prompts(),), kind="conversation", redact=self.redact)

    def settings(self) -> dict:
        # The input files (size, time) and the system messages are part of the fingerprint.
        return {"ingest": self.ingest().settings(), "n_prompts": self.n_prompts, "seed": self.seed,
                "system_messages": system_messages()}

    def read(self, ctx: Context):
        chosen: dict[str, dict] = {}  # prompt_id -> the first record asking it
        repeats: dict[str, list[dict]] = {}  # prompt_id -> later records asking it again
        drops: list[dict] = []
        order = prompts = 0
        for frame in self.ingest().read(ctx):
            for row in frame.iter_rows(named=True):
                order += 1
                if row[DROP] is not None:  # quarantined by ingest (unreadable, bad schema)
                    drops.append({"source": row["source"], DROP: row[DROP], "locator": row.get("locator"),
                                  "raw": row.get("raw")})
                    continue
                item = self.prompt_row(row, order)
                prompts += item[DROP] is None
                if item[DROP] is not None:
                    drops.append(item)
                elif item["prompt_id"] in chosen:
                    repeats.setdefault(item["prompt_id"], []).append(item)
                else:
                    chosen[item["prompt_id"]] = item
            if self.n_prompts and len(chosen) > 2 * self.n_prompts:
                self._keep_lowest(chosen, repeats)
        self._keep_lowest(chosen, repeats)
        ctx.count("not_sampled", prompts - len(chosen) - sum(map(len, repeats.values())))
        for pid, later in repeats.items():
            for item in later:
                item[DROP] = f"duplicate_prompt: same first user turn as {chosen[pid]['locator']}"
        kept = sorted(chosen.values(), key=lambda r: r["order"])
        dupes = sorted((r for later in repeats.values() for r in later), key=lambda r: r["order"])
        rows = [{k: r.get(k) for k in PROMPT_SCHEMA} for r in kept + dupes + drops]
        for r in rows[: len(kept)]:
            r["locator"] = r["raw"] = None  # kept rows carry their locator in meta
        yield pl.DataFrame(rows, schema=PROMPT_SCHEMA)

    def prompt_row(self, row: dict, order: int) -> dict:
        meta = json.loads(row["meta"] or "{}")
        prompt, reference, system = split_record(row["messages"] or [])
        base = {"source": row["source"], "order": order, "locator": meta.get("locator"), DROP: None,
                "raw": json.dumps(row["messages"], ensure_ascii=False)}
        if prompt is None or not prompt.strip():
            return {**base, DROP: "no_prompt: the record has no user turn"}
        pid = hash_prompt(prompt)
        kind = prompt_kind(prompt)
        message = pick_system(pid, kind, self.seed)
        meta.update(reference=reference, prompt_kind=kind, system_id=message["id"])
        if system:
            meta["source_system"] = system  # the record's own system message, replaced by ours
        return {**base, "prompt_id": pid, "prompt": prompt, "prompt_kind": kind, "system_id": message["id"],
                "system": message["text"], "meta": json.dumps(meta, ensure_ascii=False),
                "key": unit_hash(f"{self.seed}:sample:{pid}", digits=13)}

    def _keep_lowest(self, chosen: dict, repeats: dict) -> None:
        if not self.n_prompts or len(chosen) <= self.n_prompts:
            return
        for pid in sorted(chosen, key=lambda p: chosen[p]["key"])[self.n_prompts:]:
            del chosen[pid]
            repeats.pop(pid, None)


@dataclass
class ExplainAnswers(TeacherStage):
    sampling: AnswerSampling
    retries: int = 1
    keep_truncated: bool = False
    name = "answer"
    requires = ("prompt_id", "prompt", "system_id", "system", "meta")
    provides = ("messages", "meta")
    dtypes = {"messages": MESSAGES, "meta": pl.String}
    prompt_files = (SYSTEM_MESSAGES,)

    def requests(self, row: dict, attempt: int) -> list[Request]:
        return [Request(prompt_messages(row),
                        self.sampling.params(f"{row['prompt_id']}/{row['system_id']}/{attempt}"))]

    def accept(self, row: dict, results: list[Result]) -> Verdict:
        result = results[0]
        answer = parse_answer(result.text, result.finish_reason, self.keep_truncated)
        reason = check_answer(answer, row["prompt"], result.finish_reason, self.keep_truncated)
        meta = json.loads(row["meta"])
        meta["finish_reason"] = result.finish_reason
        trimmed = result.finish_reason == "length" and reason is None
        if trimmed:
            meta["trimmed"] = True
        # a refused answer stays in the row, so the quarantine shows what was refused; a cut one is not asked
        # again: a second answer would most likely be cut too, at full price
        messages = prompt_messages(row) + ([{"role": "assistant", "content": answer}] if answer else [])
        return Verdict({"messages": messages, "meta": json.dumps(meta, ensure_ascii=False)}, reason,
                       final=bool(reason and reason.startswith("truncated")),
                       counts={"answer_trimmed": 1} if trimmed else {})


def prompt_messages(row: dict) -> list[dict]:
    return [{"role": "system", "content": row["system"]}, {"role": "user", "content": row["prompt"]}]
