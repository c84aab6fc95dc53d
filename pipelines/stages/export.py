"""Export: id, messages -> prompt, prompt_id, split; writes `<run_dir>/export/` shaped like ultrachat_200k.

Splits `train_sft`, `test_sft`, `train_gen`, `test_gen` as `export/data/<split>-00000-of-00001.parquet` with the
columns of HuggingFaceH4/ultrachat_200k: `prompt` (the first user turn), `prompt_id` (its sha256) and `messages`.
A row's split comes from two hashes of its prompt_id, so one prompt never lands in two splits and a row keeps
its split when the dataset grows. A split the hashes leave empty borrows one row from the largest split (when there
are at least four rows), because `datasets` cannot load an empty Parquet file; splits that stay empty are not
written. Then no near-duplicate pair may straddle a train and a test split: a cluster that would moves to train whole
(`separate_splits`). The build renders the card `export/README.md` after the run (`pipelines.release.cards`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.stage import MESSAGES, Context, Stage, split_drops
from pipelines.dedup.lsh import components, pairs_of_texts
from pipelines.dedup.minhash import MinHashParams
from pipelines.stages.labels import ReadsLabels, label_rows, row_labels
from pipelines.stages.dedup import compare_text
from pipelines.teacher.guards import unit_hash
from schemas import ARROW_SCHEMAS, MESSAGE, prompt_id

SPLITS = ("train_sft", "test_sft", "train_gen", "test_gen")
EXPORT_SCHEMA = pa.schema([("prompt", pa.string()), ("prompt_id", pa.string()), ("messages", pa.list_(MESSAGE))])


def part_of(prompt_id: str, test_fraction: float) -> str:
    """"test" or "train", from a hash of the prompt_id: one prompt never lands in both, and keeps its part."""
    return "test" if unit_hash(prompt_id + ":test") < test_fraction else "train"


def assign_split(prompt_id: str, test_fraction: float, gen_fraction: float) -> str:
    kind = "gen" if unit_hash(prompt_id + ":gen") < gen_fraction else "sft"
    return f"{part_of(prompt_id, test_fraction)}_{kind}"


def fill_empty_splits(prompt_ids: list[str], splits: list[str]) -> list[str]:
    """Give each empty split the row of the largest split that hashes lowest for it (deterministic), given 4+ rows."""
    splits = list(splits)
    if len(splits) < len(SPLITS):
        return splits
    for split in SPLITS:
        if split not in splits:
            largest = max(SPLITS, key=splits.count)
            donors = [i for i, s in enumerate(splits) if s == largest]
            if len(donors) > 1:
                splits[min(donors, key=lambda i: unit_hash(f"{prompt_ids[i]}:{split}"))] = split
    return splits


def separate_splits(texts: pl.Series, splits: list[str], threshold: float, ctx: Context) -> tuple[list[str], dict]:
    """Keep near-duplicates out of train/test leakage: every cluster of near-duplicate rows (MinHash LSH at
    `threshold`) that has rows in a train and a test split moves its test rows to the matching train split.
    Returns the splits and what was found (the export's `leakage` summary)."""
    pairs = pairs_of_texts(texts, MinHashParams(), threshold)
    part = np.array([s.split("_")[0] for s in splits])
    across = int((part[pairs[:, 0]] != part[pairs[:, 1]]).sum()) if len(pairs) else 0
    moved = 0
    if across:
        labels = components(len(splits), pairs)
        frame = pl.DataFrame({"label": labels, "test": part == "test"})
        mixed = frame.group_by("label").agg(pl.col("test").any() & ~pl.col("test").all()).filter(pl.col("test"))
        move = np.isin(labels, mixed["label"].to_numpy()) & (part == "test")
        splits = ["train" + s.removeprefix("test") if m else s for s, m in zip(splits, move)]
        moved = int(move.sum())
        part = np.array([s.split("_")[0] for s in splits])
    after = int((part[pairs[:, 0]] != part[pairs[:, 1]]).sum()) if len(pairs) else 0
    ctx.count("leakage_moved", moved)
    return splits, {"threshold": threshold, "pairs_across": across, "moved": moved, "after": after}


def first_user_turn(messages: list[dict]) -> str:
    return next(m["content"] for m in messages if m["role"] == "user")


@dataclass
class ExportSFT(ReadsLabels, Stage):
    test_fraction: float = 0.1
    gen_fraction: float = 0.25
    leakage_threshold: float = 0.8
    extra_columns: tuple[str, ...] = ()  # columns of the rows written beside the messages (Alpaca's, tags)
    name = "export"
    requires = ("id", "messages")
    provides = ("prompt", "prompt_id", "split")

    def summary(self, counters: dict) -> dict:
        return {"leakage": self._leakage, **({"review": self._review} if self._review else {})}

    def run(self, batches, ctx: Context):
        frames = [b for b in batches if b.height]
        data = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame(schema={
            "messages": MESSAGES, **{c: pl.String for c in self.extra_columns}})  # nothing survived: no split files
        data, self._review = label_rows(data, row_labels(ctx.run_dir))
        data, reviewed_out = split_drops(data)
        prompts = [first_user_turn(m) for m in data["messages"].to_list()]
        prompt_ids = [prompt_id(p) for p in prompts]
        splits = fill_empty_splits(prompt_ids, [assign_split(p, self.test_fraction, self.gen_fraction)
                                                for p in prompt_ids])
        splits, self._leakage = separate_splits(compare_text(data, "conversation"), splits, self.leakage_threshold,
                                                ctx)
        data = data.with_columns(pl.Series("prompt", prompts, dtype=pl.String),
                                 pl.Series("prompt_id", prompt_ids, dtype=pl.String),
                                 pl.Series("split", splits, dtype=pl.String))
        out_dir = ctx.run_dir / "export"
        shutil.rmtree(out_dir, ignore_errors=True)
        (out_dir / "data").mkdir(parents=True)
        extra = data.select(self.extra_columns).to_arrow().schema if self.extra_columns else []
        schema = pa.schema([*EXPORT_SCHEMA, *extra])
        for split in SPLITS:
            rows = data.filter(pl.col("split") == split)
            if not rows.height:
                continue
            table = pa.Table.from_pylist(rows.select(schema.names).to_dicts(), schema=schema)
            pq.write_table(table, out_dir / "data" / f"{split}-00000-of-00001.parquet")
        yield data if reviewed_out is None else pl.concat([data, reviewed_out], how="diagonal_relaxed")


@dataclass
class ExportRows(ReadsLabels, Stage):
    """Write the rows as they are (one schema of `schemas/`) to `export/data/train-NNNNN-of-NNNNN.parquet`.

    Streams: each input batch is appended to the current shard, so memory stays flat. Its own checkpoint keeps only
    the exported ids.
    """

    kind: str = "conversation"
    shard_rows: int = 500_000
    name = "export"
    requires = ("id",)
    provides = ("id",)

    def summary(self, counters: dict) -> dict:
        reviewed = {k: counters.get(f"review_{k}", 0) for k in ("rows_reviewed", "rows_dropped")}
        return {"review": reviewed} if reviewed["rows_reviewed"] else {}

    def run(self, batches, ctx: Context):
        schema = ARROW_SCHEMAS[self.kind]
        if self.kind == "conversation":  # the tools a conversation offered, null when none (`stages.ingest`)
            schema = schema.append(pa.field("tools", pa.string()))
        out_dir = ctx.run_dir / "export"
        shutil.rmtree(out_dir, ignore_errors=True)
        (out_dir / "data").mkdir(parents=True)
        shards, writer, in_shard = [], None, 0
        decided = row_labels(ctx.run_dir)
        for batch in batches:
            batch, review = label_rows(batch, decided)
            for key, n in review.items():
                ctx.count(f"review_{key}", n)
            batch, reviewed_out = split_drops(batch)
            if reviewed_out is not None and reviewed_out.height:
                yield reviewed_out
            if not batch.height:
                continue
            if writer is None or in_shard >= self.shard_rows:
                if writer is not None:
                    writer.close()
                shards.append(out_dir / "data" / f"train-{len(shards):05d}.parquet.tmp")
                writer, in_shard = pq.ParquetWriter(shards[-1], schema), 0
            if "tools" in schema.names and "tools" not in batch.columns:
                batch = batch.with_columns(pl.lit(None, dtype=pl.String).alias("tools"))
            writer.write_table(batch.select(schema.names).to_arrow().cast(schema))
            in_shard += batch.height
            yield batch.select("id")
        if writer is not None:
            writer.close()
        for k, tmp in enumerate(shards):
            tmp.rename(tmp.with_name(f"train-{k:05d}-of-{len(shards):05d}.parquet"))
