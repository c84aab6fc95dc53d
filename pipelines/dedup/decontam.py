"""Decontamination: find records that contain benchmark prompts, by word n-gram overlap.

A benchmark is a file of prompts in any format ingest reads (GSM8K `question`/`answer` JSONL, AlpacaEval's JSON
array of `instruction`s, ...), given as `PATH` or `NAME=PATH` (the name defaults to the file's stem). Its prompts
are the user turns of its records. Text is normalised and split into words exactly as for MinHash. A record is
contaminated when one of its `ngram`-word windows (default 13, as in GPT-3's decontamination) equals a window of a
benchmark prompt, or when one of its user turns equals, in full, a benchmark prompt shorter than `ngram` words.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from connectors.detect import detect
from connectors.files import read_records
from pipelines.dedup.minhash import shingle_hashes
from pipelines.errors import ConfigError


@dataclass(frozen=True)
class Benchmark:
    name: str
    path: Path

    @classmethod
    def parse(cls, spec: str) -> "Benchmark":
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"benchmark file {path} does not exist (from benchmarks entry {spec!r})")
        return cls(name or path.name.split(".")[0], path)

    def digest(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def prompts(self) -> list[str]:
        from pipelines.stages.ingest import convert_rows  # the stage imports connectors; keep this module light

        fmt, raws = detect(read_records(self.path), self.path)
        if fmt is None:
            raise ConfigError(f"benchmark file {self.path} has no readable record")
        prompts = [m["content"] for row in convert_rows(fmt, "conversation", self.name, raws)
                   if row.get("messages") for m in row["messages"] if m["role"] == "user"]
        if not prompts:
            raise ConfigError(f"benchmark file {self.path} gave no prompts (read as {fmt.NAME})")
        return prompts


class Contamination:
    """The n-gram hashes of some benchmarks; `match` finds which benchmark, if any, each document overlaps."""

    def __init__(self, benchmarks: list[Benchmark], ngram: int = 13):
        self.names = [b.name for b in benchmarks]
        self.ngram = ngram
        self.prompt_counts: dict[str, int] = {}
        hashes, owners, whole = [], [], []
        for k, bench in enumerate(benchmarks):
            prompts = bench.prompts()
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
