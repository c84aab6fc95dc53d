"""Decontamination: find records that contain benchmark prompts, by word n-gram overlap.

A benchmark is an evaluation suite's name (`ifbench`, `ifeval_dev`, `gsm8k`, `judged`: the items `pipelines.eval`
scores, shipped in `pipelines/data` or, for IFBench, taken from its pinned wheel), `PATH`, `NAME=PATH` (the name
defaults to the file's stem) or either with `?field=a.b`. PATH is any file ingest reads (JSONL, JSON array, CSV,
Parquet, Arrow, a `datasets` directory, compressed). The first readable record decides where the prompts are, by the
first of these fields it has:

- `turns`: MT-Bench, a list of user turns, each one a prompt.
- `problem`: MATH, AIME.
- `question`: GSM8K. With `choices` (MMLU's list, ARC's `{"text": [...], "label": [...]}`) the prompt is the
  question then its choices, one per line: a long question keeps all its windows, and a short generic one ("Which of
  the following is true?") becomes specific instead of matching any user turn that equals it.
- `prompt`: HumanEval, IFEval (a list of chat messages gives its user turns).
- `instruction`: AlpacaEval, followed by a non-empty Alpaca `input` as ingest joins them.
- `input`: BIG-Bench.

A file with none of them is read as ingest reads it (messages, ShareGPT, hh-rlhf, ...): its prompts are the user
turns. `?field=a.b` names the field instead: a dotted path into each record (through lists too: `examples.input`
is every example's input); a list value gives several prompts. A record without the field, or without text in it,
is skipped and counted. A file that gives no prompt at all is a ConfigError naming its fields and the `?field=` to
write.

Text is normalised and split into words exactly as for MinHash. A record is contaminated when one of its
`ngram`-word windows (default 13, as in GPT-3's decontamination) equals a window of a benchmark prompt, or when one
of its user turns equals, in full, a benchmark prompt shorter than `ngram` words.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np

from connectors.alpaca import user_turn
from connectors.base import RecordError, convert_each
from connectors.detect import detect, kinds
from connectors.files import read_records
from connectors.streams import Raw
from connectors.walk import data_files, is_datasets_dir
from pipelines.core.errors import ConfigError, SourceError
from pipelines.dedup.minhash import shingle_hashes

# pipelines.eval's items, by suite name: shipped in pipelines/data, or (IFBench's) taken from a pinned archive
SUITES = {"gsm8k": "gsm8k_test.jsonl", "judged": "alpaca_eval_prompts.jsonl",
          "ifeval_dev": "ifeval_dev.jsonl?field=base"}  # its seed instructions: the constraint wording is IFEval's
FETCHED = {"ifbench": "IFBench_test.jsonl"}


def texts(value: Any) -> list[str]:
    """A string is one prompt; a list holds several (strings, or chat messages whose user turns count)."""
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list):
        return [t for v in value for t in texts(v.get("content") if isinstance(v, dict) and v.get("role") == "user"
                                                 else v)]
    return []


def at(value: Any, keys: list[str]) -> Any:
    """`value["a"]["b"]` for keys `a`, `b`, taken in each item of a list met on the way; None where one is missing."""
    if not keys:
        return value
    if isinstance(value, list):
        return [at(v, keys) for v in value]
    return at(value[keys[0]], keys[1:]) if isinstance(value, dict) and keys[0] in value else None


def question(record: dict) -> Any:
    """The question, then its choices (a list, or ARC's `{"text": [...], "label": [...]}`), one per line."""
    q, choices = record["question"], record.get("choices")
    choices = choices.get("text") if isinstance(choices, dict) else choices
    options = [c.get("text") if isinstance(c, dict) else c for c in choices] if isinstance(choices, list) else []
    options = [str(o) for o in options if isinstance(o, (str, int, float))]
    return "\n".join([q, *options]) if isinstance(q, str) and options else q


def instruction(record: dict) -> Any:
    text, extra = record["instruction"], record.get("input")
    return user_turn(text, extra) if isinstance(text, str) and isinstance(extra, str) else text


# (field, the value holding a record's prompts), in the order tried on the first record
LAYOUTS: tuple[tuple[str, Callable[[dict], Any]], ...] = (
    ("turns", lambda r: r["turns"]), ("problem", lambda r: r["problem"]), ("question", question),
    ("prompt", lambda r: r["prompt"]), ("instruction", instruction), ("input", lambda r: r["input"]))


@dataclass(frozen=True)
class Benchmark:
    name: str
    path: Path
    field: str | None = None

    @classmethod
    def parse(cls, spec: str) -> "Benchmark":
        if spec in SUITES:  # an evaluation suite's items, shipped in pipelines/data
            name, _, field = SUITES[spec].partition("?field=")
            return cls(spec, Path(str(resources.files("pipelines.data").joinpath(name))), field or None)
        if spec in FETCHED:
            from pipelines.teacher.eval_data import ifbench_file

            return cls(spec, ifbench_file(FETCHED[spec]))
        text, sep, field = spec.rpartition("?field=") if "?field=" in spec else (spec, "", "")
        if (sep and not field.strip(".")) or "?" in text:
            raise ConfigError(f"benchmarks entry {spec!r}: write [NAME=]PATH or [NAME=]PATH?field=FIELD")
        name, _, path = text.rpartition("=")
        path = Path(path)
        if not (path.is_file() or is_datasets_dir(path)):
            raise ConfigError(f"benchmark file {path} does not exist (from benchmarks entry {spec!r})")
        return cls(name or path.name.split(".")[0], path, field or None)

    def files(self) -> list[Path]:
        """The file, or every file of a `datasets` directory, in order (what lineage should hash)."""
        return data_files(self.path)

    def digest(self) -> str:
        """sha256 of the files' bytes, then of `?field=` when given (one file without it: the file's sha256)."""
        digest = hashlib.sha256()
        for f in self.files():
            digest.update(f.read_bytes())
        if self.field:
            digest.update(f"?field={self.field}".encode())
        return digest.hexdigest()

    def read(self) -> tuple[list[str], int]:
        """(prompts, records skipped: unreadable, or with no text where the prompts should be)."""
        raws = list(read_records(self.path))
        first = next((r.record for r in raws if r.record is not None), None)
        if first is None:
            raise ConfigError(f"benchmark file {self.path} has no readable record")
        field = self.field or next((f for f, _ in LAYOUTS if f in first), None)
        if field is None:
            prompts, skipped = self._as_ingest(raws)
        else:
            layout = dict(LAYOUTS)[field] if not self.field else None
            get = (lambda r: at(r, field.split("."))) if self.field else (lambda r: field in r and layout(r))
            found = [texts(get(r.record)) if r.record is not None else [] for r in raws]
            prompts, skipped = [p for ps in found for p in ps], sum(not ps for ps in found)
        if not prompts:
            where = (f"no text at field {field!r} in any record of {self.path}" if field else
                     f"no prompt field ({', '.join(f for f, _ in LAYOUTS)}) nor conversation in {self.path}")
            raise ConfigError(f"benchmark {self.name}: {where}; its records have fields {sorted(first)[:12]}; name "
                              f"the one holding the prompts: benchmarks={self.name}={self.path}?field=FIELD "
                              "(a.b for a nested field)")
        return prompts, skipped

    def _as_ingest(self, raws: list[Raw]) -> tuple[list[str], int]:
        """The user turns of the records, converted as ingest would; ([], 0) for no conversation format."""
        try:
            fmt, rest = detect(iter(raws), self.path)
        except SourceError:
            return [], 0
        if fmt is None or kinds(fmt) == ("text",):
            return [], 0
        native = "conversation" if "conversation" in kinds(fmt) else kinds(fmt)[0]
        converted = fmt.convert_all(rest, native) if hasattr(fmt, "convert_all") else convert_each(fmt.convert, rest)
        turns, skipped = [], 0
        for _, items in converted:
            if isinstance(items, RecordError):
                skipped += 1
                continue
            for item in items:  # a conversation's messages, or a preference pair's prompt turns
                found = [m["content"] for m in item.get("messages") or item.get("prompt") or []
                         if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)]
                turns += found
                skipped += not found
        return turns, skipped


class Contamination:
    """The n-gram hashes of some benchmarks; `match` finds which benchmark, if any, each document overlaps."""

    def __init__(self, benchmarks: list[Benchmark], ngram: int = 13):
        self.names = [b.name for b in benchmarks]
        self.ngram = ngram
        self.prompt_counts: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        hashes, owners, whole = [], [], []
        for k, bench in enumerate(benchmarks):
            prompts, self.skipped[bench.name] = bench.read()
            self.prompt_counts[bench.name] = len(prompts)
            grams, offsets = shingle_hashes(prompts, ngram)
            counts = np.diff(offsets)
            hashes.append(grams)
            owners.append(np.full(len(grams), k, dtype=np.int32))
            whole.append(np.repeat(counts == 1, counts))  # one window: the prompt has at most `ngram` words
        all_hashes = np.concatenate(hashes) if hashes else np.empty(0, np.uint64)
        order = np.argsort(all_hashes, kind="stable")
        self.hashes = all_hashes[order]
        self.owners = np.concatenate(owners)[order] if owners else np.empty(0, np.int32)
        self.whole = np.concatenate(whole)[order] if whole else np.empty(0, np.bool_)

    def match(self, texts: list[str], owner: np.ndarray, n: int) -> list[str | None]:
        """A reason per document (None when clean). `texts[i]` belongs to document `owner[i]`; pass each record's
        whole text and each of its user turns."""
        grams, offsets = shingle_hashes(texts, self.ngram)
        doc = np.repeat(owner, np.diff(offsets))
        at = np.searchsorted(self.hashes, grams)
        at[at == len(self.hashes)] = 0
        hit = self.hashes[at] == grams if len(self.hashes) else np.zeros(len(grams), np.bool_)
        reasons: list[str | None] = [None] * n
        for d, k in zip(doc[hit], at[hit]):
            if reasons[d] is None:
                how = "same prompt" if self.whole[k] else f"{self.ngram}-gram overlap"
                reasons[d] = f"contaminated: {self.names[self.owners[k]]} ({how})"
        return reasons
