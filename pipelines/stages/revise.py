"""Critique-and-revise pairs (Constitutional AI's revision step; CLAIR's minimal contrast): the judge critiques an
answer against written principles, the teacher revises it where the critique points, and the pair (revised,
original) differs only there.

Critique: messages (a conversation ending in an answer) -> messages (the turns before it), prompt, prompt_id,
          answer, principle, span, critique (grammar-enforced JSON naming one principle of the constitution and the
          span of the answer it faults; an answer with nothing to revise leaves as `nothing_to_revise`)
Revise:   prompt, answer, principle, span, critique -> revised, completions ([original, revised] for the judge);
          a revision that changes nothing (`revision_unchanged`), rewrites most of the answer (`revision_drifted`:
          not a minimal contrast), loops or is empty is refused
KeepImproved: completions (judged) -> the rows whose revision the judge scores above the original
          (`revision_not_better`), the gain counted
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from pipelines.core.config import max_tokens_setting
from pipelines.core.errors import ConfigError
from pipelines.core.stage import MESSAGES, Context, MapStage, with_drops
from pipelines.prompts import fill, load
from pipelines.stages.pairs import COMPLETIONS
from pipelines.teacher.guards import is_looping, trim_cut_answer
from pipelines.teacher.stage import Sampling, TeacherStage, Verdict
from pipelines.teacher.wire import Request, Result
from schemas import prompt_id

PROMPT_FILE = "prompts/revise.yaml"
DRIFTED = 0.35  # difflib ratio below which a revision rewrote the answer instead of revising it
ECHO = re.compile(r"^\s*(the critique of|how to revise|the revised answer)\b", re.I | re.M)


@dataclass
class ReviseSampling(Sampling):
    max_tokens_critique: int = max_tokens_setting(160, "tokens per critique (JSON)")
    max_tokens_revision: int = max_tokens_setting(320, "tokens per revised answer")


def load_constitution(path: str | Path) -> list[dict]:
    """The principles: a JSONL file, one {"name", "critique", "revision"} per line; a bad line is one error naming
    the file and the line."""
    principles, names = [], set()
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError as error:
            raise ConfigError(f"constitution {path}:{number}: not JSON ({error})") from None
        problem = principle_problem(entry)
        if problem is None and entry["name"] in names:
            problem = f"principle {entry['name']!r} is named twice"
        if problem:
            raise ConfigError(f"constitution {path}:{number}: {problem}")
        names.add(entry["name"])
        principles.append(entry)
    if not principles:
        raise ConfigError(f"constitution {path}: no principles")
    return principles


def principle_problem(entry) -> str | None:
    if not isinstance(entry, dict):
        return "expected an object with name, critique and revision"
    missing = [k for k in ("name", "critique", "revision") if not isinstance(entry.get(k), str) or not entry[k].strip()]
    if missing:
        return f"{', '.join(missing)} missing or empty (each principle needs name, critique and revision)"
    return None


def critique_schema(principles: list[dict]) -> dict:
    return {"type": "object", "properties": {
        "principle": {"enum": [p["name"] for p in principles]},
        "span": {"type": "string"},
        "critique": {"type": "string"},
        "needs_revision": {"type": "boolean"}},
        "required": ["principle", "span", "critique", "needs_revision"], "additionalProperties": False}


def split_answer(messages: list[dict]) -> tuple[list[dict], str] | None:
    """(the turns before the last answer, the answer), or None when the conversation does not end in one."""
    if len(messages) < 2 or messages[-1]["role"] != "assistant" or not (messages[-1]["content"] or "").strip():
        return None
    return messages[:-1], messages[-1]["content"]


class ReadsConstitution:
    """Mixed into a stage that reads the constitution: its text is in the fingerprint (an edited file reruns the
    stage), and `begin` loads the principles once per batch."""

    def identity(self, ctx: Context) -> dict:
        return {**super().identity(ctx), "constitution": Path(self.constitution).read_text(encoding="utf-8")}

    def begin(self, ctx: Context) -> None:
        self._principles = load_constitution(self.constitution)


@dataclass
class Critique(ReadsConstitution, TeacherStage):
    constitution: str = ""
    sampling: ReviseSampling = field(default_factory=ReviseSampling)
    name = "critique"
    requires = ("messages",)
    provides = ("messages", "prompt", "prompt_id", "answer", "principle", "span", "critique")
    dtypes = {"messages": MESSAGES}
    teacher_role = "judge"
    prompt_files = (PROMPT_FILE,)

    def requests(self, row: dict, attempt: int) -> list[Request]:
        found = split_answer(row["messages"])
        if found is None:
            return []
        turns, answer = found
        text = load("revise")["critique"]
        listed = "\n".join(f"- {p['name']}: {p['critique']}" for p in self._principles)
        user = fill(text["request"], prompt=turns[-1]["content"], answer=answer)
        return [Request([{"role": "system", "content": fill(text["system"], principles=listed)},
                         {"role": "user", "content": user}],
                        self.sampling.request_params(self.sampling.max_tokens_critique, f"{row['id']}/c/{attempt}"),
                        schema=critique_schema(self._principles))]

    def accept(self, row: dict, results: list[Result]) -> Verdict:
        found = split_answer(row["messages"])
        if found is None:
            return Verdict(reason="no_answer: the conversation does not end in an assistant answer", final=True)
        turns, answer = found
        data = results[0].data
        if not isinstance(data, dict):
            return Verdict(reason=f"critique_failed: {(results[0].error or 'no JSON')[:200]}")
        values = {"messages": turns, "prompt": turns[-1]["content"], "prompt_id": prompt_id(turns[-1]["content"]),
                  "answer": answer, "principle": data["principle"], "span": data["span"].strip(),
                  "critique": data["critique"].strip()}
        if not data["needs_revision"]:
            return Verdict(values, f"nothing_to_revise: {data['principle']}", final=True)
        if not values["span"] or values["span"].lower() not in answer.lower():
            return Verdict(values, f"span_not_in_answer: {values['span'][:80]!r}")
        return Verdict(values)


@dataclass
class Revise(ReadsConstitution, TeacherStage):
    constitution: str = ""
    sampling: ReviseSampling = field(default_factory=ReviseSampling)
    name = "revise"
    requires = ("prompt", "answer", "principle", "span", "critique")
    provides = ("revised", "completions")
    dtypes = {"completions": COMPLETIONS}
    prompt_files = (PROMPT_FILE,)

    def requests(self, row: dict, attempt: int) -> list[Request]:
        text = load("revise")["revise"]
        user = fill(text["request"], prompt=row["prompt"], answer=row["answer"], span=row["span"],
                    critique=row["critique"], revision=next((p["revision"] for p in self._principles if p["name"] == row["principle"]), ""))
        return [Request([{"role": "system", "content": text["system"]}, {"role": "user", "content": user}],
                        self.sampling.request_params(self.sampling.max_tokens_revision, f"{row['id']}/r/{attempt}"))]

    def accept(self, row: dict, results: list[Result]) -> Verdict:
        revised = trim_cut_answer(results[0].text or "", results[0].finish_reason).strip()
        completions = [completion("original", row["principle"], row["answer"]),
                       completion("revised", row["principle"], revised)]
        return Verdict({"revised": revised, "completions": completions},
                       revision_problem(row["answer"], revised, row["critique"]))


def completion(model: str, principle: str, content: str) -> dict:
    return {"model": model, "principle": principle, "content": content, "ratings": [], "overall": None}


def revision_problem(answer: str, revised: str, critique: str = "") -> str | None:
    """Why a revision is not a minimal-contrast revision of `answer`, or None."""
    if not revised:
        return "empty_revision: no text"
    if is_looping(revised):
        return "repeated: the revision loops"
    if ECHO.search(revised) or (critique and critique in revised):
        return "revision_echoes_prompt: it copies the critique or the request's labels into the answer"
    if " ".join(revised.split()) == " ".join(answer.split()):
        return "revision_unchanged: the same text, spacing aside"
    ratio = difflib.SequenceMatcher(None, answer, revised, autojunk=False).ratio()
    if ratio < DRIFTED:
        return f"revision_drifted: only {ratio:.2f} of the answer kept (a rewrite, not a revision)"
    return None


@dataclass
class KeepImproved(MapStage):
    """Keep a revision the judge scores at least `min_gain` above the original it revised; count the gains."""

    min_gain: float = 0.2
    name = "keep_improved"
    requires = ("completions",)
    provides = ("completions",)

    def summary(self, counters: dict) -> dict:
        kept = counters.get("improved", 0)
        return {"revision": {"improved": kept, "not_better": counters.get("not_better", 0),
                             "mean_gain": round(counters.get("gain_total", 0.0) / kept, 3) if kept else None}}

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        reasons = []
        for completions in batch["completions"].to_list():
            original, revised = (next((c["overall"] for c in completions if c["model"] == m), None)
                                 for m in ("original", "revised"))
            if original is None or revised is None:
                reasons.append("unjudged: the judge rated only one side")
            elif revised - original < self.min_gain:
                ctx.count("not_better")
                reasons.append(f"revision_not_better: judged {revised:.2f} against the original's {original:.2f} "
                               f"(min_gain {self.min_gain})")
            else:
                ctx.count("improved")
                ctx.count("gain_total", revised - original)
                reasons.append(None)
        return with_drops(batch, reasons)
