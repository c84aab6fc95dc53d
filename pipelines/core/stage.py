"""The stage contract: a stage turns a stream of polars DataFrames into another.

- `MapStage.process(batch, ctx)` handles one batch on its own; the runner checkpoints one Parquet part per batch,
  so a killed map stage resumes after its last finished part.
- `Source.read(ctx)` ignores the input and yields the first frames of a recipe (it must be deterministic).
- `TwoPassStage` reads its input twice: `scan(batches, ctx)` sees every batch and keeps a summary (near-dedup keeps
  signatures, not text), then `apply(batch, ctx)` marks each batch and `finish(ctx)` runs after the last part is
  written; memory stays bounded by the summary. A killed one starts over.
- A plain `Stage.run(batches, ctx)` sees the whole input (export); a killed one starts over.

A stage marks rows to remove by setting `drop_reason` (null keeps the row). Reasons read `"category: detail"`;
the report counts them by category. A dropped row may also carry `locator` (`file.jsonl:17`) and `raw` (the record
as read); those two columns are removed from kept rows, and every drop ends up in `runs/<recipe>/quarantine.parquet`.
Stages are dataclasses: their fields are their config and, with what `identity(ctx)` adds, their fingerprint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import polars as pl

from pipelines.core.errors import SchemaError

DROP = "drop_reason"
QUARANTINE_ONLY = ("locator", "raw")  # columns a stage may set on dropped rows only: where a record was, as read
MESSAGES = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))  # schemas.MESSAGE in polars
PACKAGE = Path(__file__).resolve().parents[1]  # pipelines/: stages name their prompt files from here


@dataclass
class Context:
    """What a stage may use besides its input: where to write, the clients it talks to, a seeded rng, the config."""

    run_dir: Path
    config: Any
    clients: dict[str, Any] = field(default_factory=dict)  # by role, as the recipe names them (`Recipe.roles`)
    limit: int | None = None  # --limit: rows a Source may produce
    stages: list = field(default_factory=list)  # the recipe's stages (cards list their teachers and prompts)
    fingerprint: str = ""  # of the stage being run (set by the runner)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("pipelines"))
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    counters: Counter = field(default_factory=Counter)

    def count(self, key: str, n: int = 1) -> None:
        """Count an event that is not a dropped row (a retried turn, a truncated dialogue) for the report."""
        self.counters[key] += n


class Stage:
    name: str = "stage"
    requires: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    batch_size: int = 256
    group_by: str | None = None  # a column whose equal values (contiguous in the input) a batch never splits
    prompt_files: tuple[str, ...] = ()  # files (under pipelines/) holding a teacher stage's prompts: hashed in cards
    # how an engine may spread the stage over workers: "rows" (any batch anywhere: a map stage with no teacher),
    # "signatures" (a two-pass stage with `sign` and `resolve`: near-dedup), or None (here only)
    parallel: str | None = None

    def run(self, batches: Iterator[pl.DataFrame], ctx: Context) -> Iterator[pl.DataFrame]:
        raise NotImplementedError

    def summary(self, counters: dict) -> dict:
        """What the stage reports about its whole run beyond rows and drops, as `{section: values}` (JSON): written
        into its `_SUCCESS.json` when it finishes, read by the run report and the card (near-dedup's clusters and
        recall, the judge's unreadable answers). `counters` are its counters over all its batches."""
        return {}

    def settings(self) -> dict:
        """The config that defines this stage's output (goes into its fingerprint)."""
        if dataclasses.is_dataclass(self):
            return dataclasses.asdict(self)
        return {}

    def identity(self, ctx: Context) -> dict:
        """What else its output depends on, as `{key: JSON value}`, for its fingerprint beside its name, settings
        and input: the sha256 of its `prompt_files` (an edited prompt runs it again), a Source's `--limit`, the
        identity of the teachers it asks (`pipelines.teacher.stage.Asks`), the human labels an export applies. An
        override extends `super().identity(ctx)`."""
        if not self.prompt_files:
            return {}
        return {"prompts": {name: hashlib.sha256((PACKAGE / name).read_bytes()).hexdigest()
                            for name in self.prompt_files}}

    def records(self, ctx: Context) -> dict:
        """What the stage records in its `_SUCCESS.json` about what it applied, taken when it starts (an export: the
        digest of the human labels, which the review tool compares with the labels as they are now)."""
        return {}

    def check_columns(self, columns: list[str]) -> None:
        missing = [c for c in self.requires if c not in columns]
        if missing:
            raise SchemaError(f"stage {self.name} needs columns {missing}, but its input has {columns}")


class MapStage(Stage):
    parallel = "rows"
    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        raise NotImplementedError

    def run(self, batches, ctx):
        for batch in batches:
            yield self.process(batch, ctx)


class TwoPassStage(Stage):
    def scan(self, batches: Iterator[pl.DataFrame], ctx: Context) -> None:
        raise NotImplementedError

    def apply(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        raise NotImplementedError

    def finish(self, ctx: Context) -> None:
        """After the last output part is written (persist what the run kept)."""


class Source(Stage):
    def read(self, ctx: Context) -> Iterator[pl.DataFrame]:
        raise NotImplementedError

    def identity(self, ctx: Context) -> dict:
        return {**super().identity(ctx), "limit": ctx.limit}  # --limit changes what a source produces

    def run(self, batches, ctx):
        yield from self.read(ctx)


def with_drops(batch: pl.DataFrame, reasons: list[str | None]) -> pl.DataFrame:
    """Attach a drop_reason column: `with_drops(df, [None, "empty: no text"])` drops the second row."""
    return batch.with_columns(pl.Series(DROP, reasons, dtype=pl.String))


def split_drops(batch: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """(the rows kept, without drop_reason; the rows dropped, or None when `batch` has no drop_reason): for a stage
    that writes its kept rows somewhere itself and hands the dropped ones to the runner."""
    if DROP not in batch.columns:
        return batch, None
    return batch.filter(pl.col(DROP).is_null()).drop(DROP), batch.filter(pl.col(DROP).is_not_null())
