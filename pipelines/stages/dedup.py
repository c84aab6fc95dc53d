"""Deduplication and decontamination stages: rows in, the same rows out, duplicates dropped with a reason.

- ExactDedup keeps the first row of each `id` (the sha256 of the canonical content).
- NearDedup (MinHash LSH, `pipelines.dedup`) reads its input twice: the first pass keeps only signatures, lengths
  and ids (a million rows take about 0.7 GB), the second marks each batch. It compares the whole conversation or only
  the first user turn (`compare="prompt"`), checks against a persistent index when one is configured and adds the
  rows it kept to it, writes `dedup/clusters.parquet` (what was merged) and reports in its summary (`_SUCCESS.json`,
  the run report, the card) its pairs, clusters, detection probabilities and the recall measured on planted copies
  of this run's own texts. While it reads and extends the index it holds the index's lock: a second run on the same
  index exits busy (75) and resumes later. A cluster's id is its first row (indexed rows first, then the input's).
  Under `--engine ray` the same decisions come from `pipelines/engines/near.py`, where no process holds them all.
- Decontaminate drops rows that overlap benchmark prompts, naming the benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipelines.core.errors import ConfigError
from pipelines.core.locks import DirLock
from pipelines.core.stage import Context, MapStage, Stage, TwoPassStage, with_drops
from pipelines.dedup.decontam import Benchmark, Contamination
from pipelines.dedup.index import MinHashIndex, Signed
from pipelines.dedup.lsh import band_keys, components, detection_probability, keepers, similar_pairs
from pipelines.dedup.minhash import MinHashParams, signatures
from pipelines.dedup.recall import planted_recall

COMPARE = ("conversation", "prompt")
PLANTED_SAMPLE = 300
PREVIEW_CHARS = 300


def contents(roles: tuple[str, ...] | None = None) -> pl.Expr:
    """The message contents of each row (of the given roles only), as a list."""
    element = pl.element()
    if roles is not None:
        element = element.filter(pl.element().struct.field("role").is_in(roles))
    return pl.col("messages").list.eval(element.struct.field("content"))


def compare_text(frame: pl.DataFrame, compare: str) -> pl.Series:
    """What near-dedup compares: every message's content joined by newlines, or the first user turn; a `text` row's
    text either way."""
    if "messages" not in frame.columns:
        return frame["text"].fill_null("")
    if compare == "prompt":
        return frame.select(contents(("user",)).list.first().fill_null("")).to_series()
    return frame.select(contents().list.join("\n").fill_null("")).to_series()


def seen_reason(row_id: str) -> str:
    return f"exact_duplicate: of {row_id} (indexed)"


def near_reason(kept_id: str, kept_indexed: bool) -> str:
    return f"near_duplicate: of {kept_id}{' (indexed)' if kept_indexed else ''}"


def sorted_clusters(clusters: pl.DataFrame) -> pl.DataFrame:
    """`dedup/clusters.parquet`'s order and columns: by cluster (its first row), the kept row first, then by row."""
    return clusters.sort("cluster", "kept", "row", descending=[False, True, False]).select(
        "cluster", "id", "kept", "kept_id", "estimated_jaccard_to_kept", "indexed", "preview")


@dataclass
class ExactDedup(Stage):
    name = "dedup_exact"
    requires = ("id",)

    def run(self, batches, ctx: Context):
        seen: set[str] = set()
        for batch in batches:
            reasons = []
            for row_id in batch["id"].to_list():
                reasons.append(f"exact_duplicate: of {row_id}" if row_id in seen else None)
                seen.add(row_id)
            yield with_drops(batch, reasons)


@dataclass
class NearDedup(TwoPassStage):
    threshold: float = 0.8
    compare: str = "conversation"
    num_perm: int = 128
    bands: int = 16
    rows: int = 8
    ngram: int = 5
    seed: int = 1
    index: str = ""
    name = "dedup_near"
    parallel = "signatures"
    requires = ("id",)
    batch_size = 8192

    def __post_init__(self):
        if self.compare not in COMPARE:
            raise ConfigError(f"dedup compare must be one of {COMPARE}, not {self.compare!r}")
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"dedup threshold must be in (0, 1], not {self.threshold}")
        self.params = MinHashParams(self.num_perm, self.bands, self.rows, self.ngram, self.seed)

    def settings(self) -> dict:
        return {**super().settings(), "index": str(Path(self.index).resolve()) if self.index else ""}

    def _index(self) -> MinHashIndex | None:
        return MinHashIndex(Path(self.index), {**self.params.settings(), "compare": self.compare}) \
            if self.index else None

    def scan(self, batches, ctx: Context) -> None:
        self.resolve(*self.sign(batches), ctx)

    def summary(self, counters: dict) -> dict:
        return {"near": self._stats} if getattr(self, "_stats", None) else {}

    def resolve(self, new: Signed, active: np.ndarray, sample: list[str], ctx: Context) -> None:
        """Everything after signing (`sign`'s results): pairs, clusters, keepers, drop reasons, stats."""
        index = self._index()
        self._lock_index(index)
        old = index.load(exclude_run=ctx.fingerprint) if index is not None else Signed.empty(self.num_perm, self.bands)
        both, n_old = old + new, len(old)
        is_old = np.arange(len(both)) < n_old
        active = np.concatenate([np.ones(n_old, np.bool_), active])
        pairs = similar_pairs(both.sigs, both.keys, self.threshold, active=active, old=is_old)
        labels = components(len(both), pairs)
        keeper = keepers(labels, both.lengths, both.ids, is_old)

        seen_before = pl.Series(new.ids, dtype=pl.String).is_in(old.ids).to_numpy()
        dropped = seen_before | (keeper[n_old:] != np.arange(n_old, len(both)))
        self._reasons = {}
        for i in np.flatnonzero(dropped):
            k = keeper[n_old + i]
            self._reasons[int(i)] = seen_reason(new.ids[i]) if seen_before[i] else near_reason(both.ids[k], k < n_old)
        self._clusters = self._cluster_table(labels, keeper, both, is_old)
        self._previews, self._offset, self._n_old = [], 0, n_old
        self._kept = new.take(np.flatnonzero(~dropped)) if index is not None else None
        self.record_stats(ctx, len(new), n_old, len(pairs), int(self._clusters["cluster"].n_unique()),
                          len(self._reasons), sample)

    def _lock_index(self, index: MinHashIndex | None) -> None:
        """Hold the index's lock until `finish` (or `unlock_index`) has added this run's rows: two runs never race
        on one index."""
        self._index_lock = None
        if index is not None:
            index.root.mkdir(parents=True, exist_ok=True)
            self._index_lock = DirLock(index.root / ".lock", f"run using the dedup index {index.root}").__enter__()

    def unlock_index(self) -> None:
        if getattr(self, "_index_lock", None) is not None:
            self._index_lock.__exit__(None, None, None)
            self._index_lock = None

    def record_stats(self, ctx: Context, rows_in: int, n_old: int, pairs: int, clusters: int, dropped: int,
                     sample: list[str]) -> None:
        """The summary both engines report, and its counters."""
        planted = planted_recall(sample, self.params, self.threshold)
        self._stats = {
            "compare": self.compare, "threshold": self.threshold, **self.params.settings(),
            "rows_in": rows_in, "indexed_before": n_old, "pairs": pairs, "clusters": clusters, "dropped": dropped,
            "detection_probability": {j: round(detection_probability(j, self.bands, self.rows), 4)
                                      for j in (0.7, 0.8, 0.9)},
            "planted": planted, "index": str(Path(self.index).resolve()) if self.index else None,
        }
        ctx.count("near_pairs", pairs)
        ctx.count("near_clusters", clusters)
        ctx.count("planted_pairs", planted["pairs"])

    def sign(self, batches) -> tuple[Signed, np.ndarray, list[str]]:
        """(the rows signed, which have any words, the first texts as a sample for the planted-recall check)."""
        ids, lengths, sigs, counts, sample = [], [], [], [], []
        for batch in batches:
            texts = compare_text(batch, self.compare)
            batch_sigs, batch_counts = signatures(texts, self.params)
            ids.extend(batch["id"].to_list())
            lengths.append(texts.str.len_chars().cast(pl.Int64).to_numpy())
            sigs.append(batch_sigs)
            counts.append(batch_counts)
            if len(sample) < PLANTED_SAMPLE:
                sample.extend(texts.head(PLANTED_SAMPLE - len(sample)).to_list())
        if not ids:
            return Signed.empty(self.num_perm, self.bands), np.empty(0, np.bool_), sample
        all_sigs = np.concatenate(sigs)
        signed = Signed(ids, np.concatenate(lengths), all_sigs, band_keys(all_sigs, self.bands, self.rows))
        return signed, np.concatenate(counts) > 0, sample

    @staticmethod
    def _cluster_table(labels, keeper, rows: Signed, is_old) -> pl.DataFrame:
        multi = np.flatnonzero(np.bincount(labels)[labels] > 1) if len(labels) else np.empty(0, np.int64)
        agree = (rows.sigs[multi] == rows.sigs[keeper[multi]]).mean(axis=1) if len(multi) else np.empty(0)
        return pl.DataFrame({
            "row": multi.astype(np.int64),
            "cluster": labels[multi].astype(np.int64),
            "id": [rows.ids[i] for i in multi],
            "kept": keeper[multi] == multi,
            "kept_id": [rows.ids[k] for k in keeper[multi]],
            "estimated_jaccard_to_kept": agree.round(4),
            "indexed": is_old[multi],
        }, schema_overrides={"id": pl.String, "kept_id": pl.String})

    def apply(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        start, self._offset = self._offset, self._offset + batch.height
        reasons = [self._reasons.get(i) for i in range(start, start + batch.height)]
        if self._clusters.height:
            texts = compare_text(batch, self.compare).str.slice(0, PREVIEW_CHARS)
            rows = pl.int_range(self._n_old + start, self._n_old + start + batch.height, dtype=pl.Int64, eager=True)
            wanted = pl.DataFrame({"row": rows, "preview": texts}).join(self._clusters.select("row"), on="row",
                                                                          how="semi")
            self._previews.extend(wanted.iter_rows())
        return with_drops(batch, reasons)

    def finish(self, ctx: Context) -> None:
        previews = pl.DataFrame(self._previews, schema={"row": pl.Int64, "preview": pl.String}, orient="row")
        clusters = self._clusters.join(previews, on="row", how="left")
        out = ctx.run_dir / "dedup" / "clusters.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        sorted_clusters(clusters).write_parquet(out)
        if self._kept is not None:
            self._index().add(ctx.fingerprint, self._kept)
        self.unlock_index()


@dataclass
class Decontaminate(MapStage):
    """Drop rows whose text overlaps a benchmark prompt: `contaminated: gsm8k_test (13-gram overlap)`."""

    benchmarks: tuple[str, ...] = ()
    ngram: int = 13
    name = "decontaminate"
    requires = ("id",)
    batch_size = 2048  # a part per 2k rows: a killed run loses little, and the n-gram lookup is vectorised anyway

    def __post_init__(self):
        self._benchmarks = [Benchmark.parse(spec) for spec in self.benchmarks]
        self._digests = {b.name: b.digest() for b in self._benchmarks}
        self._contamination: Contamination | None = None

    def settings(self) -> dict:
        return {"ngram": self.ngram, "benchmarks": self._digests}

    def summary(self, counters: dict) -> dict:
        if self._contamination is None:
            self._contamination = Contamination(self._benchmarks, self.ngram)
        found = {k.removeprefix("contaminated_"): v for k, v in sorted(counters.items())
                 if k.startswith("contaminated_")}
        return {"decontamination": {"ngram": self.ngram, "prompts": self._contamination.prompt_counts,
                                    "skipped": self._contamination.skipped, "sha256": self._digests,
                                    "dropped": found}}

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        if self._contamination is None:
            self._contamination = Contamination(self._benchmarks, self.ngram)
        whole = compare_text(batch, "conversation")
        texts, owner = whole.to_list(), list(range(batch.height))
        if "messages" in batch.columns:
            turns = batch.select(contents(("user",)).alias("turns")).with_row_index("row").explode("turns")
            turns = turns.drop_nulls("turns")
            texts += turns["turns"].to_list()
            owner += turns["row"].to_list()
        reasons = self._contamination.match(texts, np.asarray(owner, dtype=np.int64), batch.height)
        for reason in filter(None, reasons):
            ctx.count("contaminated_" + reason.split(": ", 1)[1].split(" (")[0])
        return with_drops(batch, reasons)
