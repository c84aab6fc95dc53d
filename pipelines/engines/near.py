"""Near-dedup under `--engine ray`, where no process holds every signature (datatrove's split of MinHash into
signatures, buckets, clusters and a filter, with our verified pairs, index, keep rule and resume).

Rows are numbered as the local engine numbers them: the persistent index's rows first (its shards in manifest order),
then the input's. They live in *shards* of consecutive rows: one per index shard file, and one per group of
SHARD_BATCHES input batches, whose signatures the `sign` step writes. Data moves between steps as Parquet files in
the plan's directory (`dedup/plan/` under the run dir): a task of one step writes its output split by the partition
or shard of the task that will read it, and a task of the next step reads its files from every task before. Each
task's output directory appears whole (a rename) when the task is done, so a killed run, or a worker Ray retries,
redoes only unfinished tasks; Ray runs the tasks (one Ray Data task per plan task) and carries only their small
summaries, so its object store stays small, and a shuffle spills to the run dir's disk by design.

Steps (S shards; P partitions of band keys and Q of graph nodes, both fixed by the row count when the plan is made):
1. `sign` (per shard): signatures, lengths and ids of an input shard (`sig.parquet`); every shard's
   `(band, key, row)` rows split into P files by key, and, when there is an index, its `(id, row)` rows by id.
2. `buckets` (per partition): the rows of each (band, key) bucket sorted by row, the candidate pairs the local
   engine would compare (`candidate_pairs`), filed by the shard of their first row; and the input rows whose id
   the index holds (`exact_duplicate ... (indexed)`), filed by shard.
3. `attach` (per shard): each candidate pair once, with its first row's signature, filed by the second row's shard.
4. `verify` (per shard): the pairs whose signatures agree in `threshold * num_perm` positions: the graph's edges,
   both directions, filed by node (Q partitions).
5. `cc<t>` (per node partition): connected components by alternating large-star and small-star steps (Kiveris et al.
   2014) on edges filed by node; each step reads and writes O(edges) and no task holds more than its nodes' edges.
   When a large-star and small-star pair changes nothing (a checksum of the edge set), every component is a star
   around its smallest row, which labels it, as `components` labels the local engine's clusters. Not union-find per
   partition and a merge of the partitions' forests: the merge is one process holding a forest over every clustered
   row. Star steps take O(log^2 n) rounds in theory; near-duplicate graphs are shallow (9 steps at 10M rows here).
6. `labels` (per node partition): each clustered row and its label, filed by the row's shard.
7. `members` (per shard): clustered rows with id, length, signature and text preview, filed by label range.
8. `clusters` (per label range, P of them): the keep rule (`keepers`: indexed first, then longest, then smallest
   id), each member's agreement with its keeper, the rows of `dedup/clusters.parquet` in its order, and the drop of
   each input row that is not its cluster's keeper, filed by shard.
9. `apply` (per input shard, redone on every run: it writes the stage's parts): drop reasons onto the input's
   batches, one part per batch as the local engine cuts them, and the kept rows' signatures for the index.
The driver then writes `dedup/clusters.parquet` one label range at a time, adds the index shards, and deletes the
plan; `dedup/plan.json` keeps each step's tasks, seconds, rows and bytes written.

Why one module of about 450 lines: the nine steps are one plan whose files each step writes for the next (names,
partitions, schemas); split across modules, every step would import the plan's layout back from the others.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core import progress
from pipelines.core.files import replace_with, write_json
from pipelines.core.parts import write_part
from pipelines.core.stage import Context, with_drops
from pipelines.dedup.index import fixed_list, matrix
from pipelines.dedup.lsh import candidate_pairs, keepers, large_star, min_equal, small_star
from pipelines.engines.ray import OnWorkers, Pieces, batch_plan, read_batch, unwrapped
from pipelines.stages.dedup import (PLANTED_SAMPLE, PREVIEW_CHARS, NearDedup, compare_text, near_reason, seen_reason,
                                    sorted_clusters)

# The sizes of a task's input (read on the driver when a plan is made; docs/ray.md says when to raise them):
SHARD_BATCHES = int(os.environ.get("PIPELINES_NEAR_SHARD_BATCHES", 8))  # batches of 8192 per shard: 65,536 rows
PARTITION_BAND_ROWS = int(os.environ.get("PIPELINES_NEAR_PARTITION_ROWS", 2_000_000))  # band rows: about 40 MB
PARTITION_NODES = 2_000_000  # rows per partition of the pair graph (most rows are in no pair: a partition is small)
EDGE_SCHEMA = pa.schema([("u", pa.int64()), ("v", pa.int64())])
MIX = np.uint64(0x9E3779B97F4A7C15)


@dataclass
class Shard:
    """Rows `first .. first + rows - 1`: an index shard file (`path`), or input batches (`batches`: (k, pieces)) whose
    signatures the sign step writes."""

    first: int
    rows: int
    path: str = ""
    batches: list[tuple[int, Pieces]] = field(default_factory=list)

    @property
    def old(self) -> bool:
        return not self.batches


class NearPlan:
    """The steps above for one NearDedup stage over `prev_dir`'s parts; `run()` does them and writes the stage's
    parts into `stage_dir`."""

    def __init__(self, stage: NearDedup, ctx: Context, prev_dir: Path, stage_dir: Path):
        self.stage, self.prev_dir, self.stage_dir = stage, prev_dir, stage_dir.resolve()
        self.ctx = Context(run_dir=ctx.run_dir.resolve(), config=ctx.config, limit=ctx.limit,
                           fingerprint=ctx.fingerprint)
        self.work = self.ctx.run_dir / "dedup" / "plan"
        self.need = min_equal(stage.threshold, stage.num_perm)

    def __getstate__(self) -> dict:  # what workers get: not the driver's engine and report
        return {k: v for k, v in self.__dict__.items() if k not in ("_workers", "report")}

    def _layout(self) -> None:
        """Shards (the index's, as they are now, then the input's) and partition counts."""
        index = self.stage._index()
        self.shards, first = [], 0
        for path, rows in index.shards(exclude_run=self.ctx.fingerprint) if index is not None else []:
            self.shards.append(Shard(first, rows, path=str(path.resolve())))
            first += rows
        self.n_old = first
        plan = batch_plan(self.prev_dir, self.stage.batch_size)
        for start in range(0, len(plan), SHARD_BATCHES):
            batches = list(enumerate(plan[start:start + SHARD_BATCHES], start))
            rows = sum(n for _, pieces in batches for _, _, n in pieces)
            self.shards.append(Shard(first, rows, path=str(self.work / "sign" / str(len(self.shards)) / "sig.parquet"),
                                     batches=batches))
            first += rows
        self.total = first
        self.starts = np.array([s.first for s in self.shards] + [first], dtype=np.int64)
        self.partitions = max(2, -(-first * self.stage.bands // PARTITION_BAND_ROWS))
        self.node_partitions = max(2, -(-first // PARTITION_NODES))

    # -- the driver --------------------------------------------------------------------------------------------------

    def run(self, engine, task) -> None:
        self._workers = engine.on_workers
        self.stage._lock_index(self.stage._index())  # before reading which shards the index has
        try:
            self._layout()
            self._fresh_work()
            self._run(task)
        finally:
            self.stage.unlock_index()
        write_json(self.ctx.run_dir / "dedup" / "plan.json", self.report)
        shutil.rmtree(self.work, ignore_errors=True)

    def _run(self, task) -> None:
        self.started = time.monotonic()
        shards, parts = range(len(self.shards)), range(self.partitions)
        self._step("sign", shards, advance=lambda i: progress.advance(task, 0 if self.shards[i].old else
                                                                      self.shards[i].rows))
        self._step("buckets", parts)
        self._step("attach", shards)
        pairs = sum(info["pairs"] for info in self._step("verify", shards))
        self.final = self._components()
        self._step("labels", range(self.node_partitions))
        self._step("members", shards)
        clusters = sum(info["clusters"] for info in self._step("clusters", parts))
        sample = self._sample()
        self.stage.record_stats(self.ctx, self.total - self.n_old, self.n_old, pairs, clusters, 0, sample)
        self.counters = dict(self.ctx.counters)
        self.seconds_before_apply = time.monotonic() - self.started  # part 0 carries them, as the local scan's
        shutil.rmtree(self.work / "apply", ignore_errors=True)  # its parts went with the stage dir: write them again
        new = [i for i in shards if not self.shards[i].old]
        dropped = sum(info["dropped"] for info in self._step("apply", new))
        self.stage._stats["dropped"] = dropped
        self._write_clusters()
        index = self.stage._index()
        if index is not None:
            index.add_files(self.ctx.fingerprint, [self.work / "apply" / str(i) / "index.parquet" for i in new])

    def _fresh_work(self) -> None:
        """Keep the plan's finished tasks only if they were made for this stage and input (else start over)."""
        identity = {"fingerprint": self.ctx.fingerprint, "partitions": [self.partitions, self.node_partitions],
                    "polars": pl.__version__,
                    "shards": [(s.first, s.rows, s.path) for s in self.shards]}
        marker = self.work / "identity.json"
        if marker.exists() and json.loads(marker.read_text()) != json.loads(json.dumps(identity)):
            shutil.rmtree(self.work)
        shutil.rmtree(self.work / "_tmp", ignore_errors=True)  # what killed tasks left: no task runs now
        if not marker.exists():
            self.work.mkdir(parents=True, exist_ok=True)
            write_json(marker, identity)
        self.report = {"rows": self.total, "indexed_rows": self.n_old, "shards": len(self.shards),
                       "partitions": self.partitions, "node_partitions": self.node_partitions, "steps": []}

    def _step(self, name: str, ids, advance=None) -> list[dict]:
        """Run step `name`'s tasks that are not done on workers; returns every task's summary."""
        started = time.monotonic()
        todo = [i for i in ids if not (self.work / name / str(i)).exists()]
        if todo:
            done = self._workers([[i] for i in todo], _PlanStep(self, name, todo))

            def run() -> None:
                for batch in done.iter_batches(batch_size=None, batch_format="pyarrow"):
                    for i in batch["id"].to_pylist():
                        if advance is not None:
                            advance(i)
            unwrapped(run)
        infos = [json.loads((self.work / name / str(i) / "_task.json").read_text()) for i in ids]
        self.report["steps"].append({
            "step": name, "tasks": len(infos), "ran": len(todo), "wall_seconds": round(time.monotonic() - started, 2),
            "task_seconds": round(sum(i["seconds"] for i in infos), 2),
            "bytes_written": sum(i["bytes"] for i in infos),
            **{k: sum(i.get(k, 0) for i in infos) for k in ("rows_out", "pairs", "clusters", "dropped")}})
        return infos

    def _components(self) -> str:
        """Large-star and small-star steps until a pair of them leaves the edge set as it was; the step whose output
        is that edge set."""
        checksums, source = [], "verify"
        for t in range(200):  # O(log^2 n) steps; 200 is never reached
            self.source = source  # what task_cc reads
            infos = self._step(f"cc{t}", range(self.node_partitions))
            checksums.append((sum(i["edges"] for i in infos), sum(i["checksum"] for i in infos) % 2**64))
            if checksums[t][0] == 0 or (t >= 2 and t % 2 == 0 and checksums[t] == checksums[t - 2]):
                return source
            source = f"cc{t}"
        raise RuntimeError("connected components did not converge")

    def _sample(self) -> list[str]:
        """The local engine's planted-recall sample: the first texts of the input, in order."""
        sample: list[str] = []
        cache: dict[str, pl.DataFrame] = {}
        for shard in self.shards:
            for _, pieces in shard.batches:
                sample.extend(compare_text(read_batch(pieces, cache), self.stage.compare)
                              .head(PLANTED_SAMPLE - len(sample)).to_list())
                if len(sample) >= PLANTED_SAMPLE:
                    return sample
        return sample

    def _write_clusters(self) -> None:
        """`dedup/clusters.parquet`, one label range at a time (they are in cluster order)."""
        def write(tmp: Path) -> None:
            writer = None
            for k in range(self.partitions):
                table = pq.read_table(self.work / "clusters" / str(k) / "clusters.parquet")
                writer = writer or pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table.cast(writer.schema))
            writer.close()

        replace_with(self.ctx.run_dir / "dedup" / "clusters.parquet", write)

    # -- the tasks (on workers) --------------------------------------------------------------------------------------

    def shard_of(self, rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.starts, rows, side="right") - 1

    def signatures(self, i: int, columns: tuple[str, ...] = ("id", "length", "signature", "band_keys")) -> pa.Table:
        """Shard i's rows as an index shard holds them (`sig.parquet` adds `active`)."""
        return pq.read_table(self.shards[i].path, columns=list(columns))

    def task_sign(self, i: int, out: Path) -> dict:
        shard = self.shards[i]
        if shard.old:
            table = pq.read_table(shard.path, columns=["id", "band_keys"])
            active = np.ones(table.num_rows, np.bool_)
        else:
            cache: dict[str, pl.DataFrame] = {}
            signed, active, _ = self.stage.sign(read_batch(pieces, cache) for _, pieces in shard.batches)
            table = pa.table({"id": pa.array(signed.ids, pa.string()), "length": pa.array(signed.lengths, pa.int64()),
                              "signature": fixed_list(signed.sigs, pa.uint32()),
                              "band_keys": fixed_list(signed.keys, pa.uint64()), "active": active})
            pq.write_table(table, out / "sig.parquet")
        rows = shard.first + np.flatnonzero(active)
        keys = matrix(table["band_keys"], np.uint64)[active]
        bands = keys.shape[1]
        band_rows = pa.table({"band": np.tile(np.arange(bands, dtype=np.int32), len(rows)), "key": keys.ravel(),
                              "row": np.repeat(rows, bands)})
        _write_split(band_rows, np.asarray(band_rows["key"]) % np.uint64(self.partitions), out, "bands-")
        if self.n_old:
            ids = pa.table({"id": table["id"], "row": np.arange(shard.first, shard.first + shard.rows)})
            _write_split(ids, _id_partition(ids["id"], self.partitions), out, "ids-")
        return {"rows_out": len(rows)}

    def task_buckets(self, k: int, out: Path) -> dict:
        found = _read(sorted(self.work.glob(f"sign/*/bands-{k}.parquet")),
                      pa.schema([("band", pa.int32()), ("key", pa.uint64()), ("row", pa.int64())]))
        band, key, row = (np.asarray(found[c]) for c in ("band", "key", "row"))
        order = np.lexsort((row, key, band))
        band, key, row = band[order], key[order], row[order]
        new_bucket = np.ones(len(row), np.bool_)
        new_bucket[1:] = (band[1:] != band[:-1]) | (key[1:] != key[:-1])
        pairs = candidate_pairs(row, np.cumsum(new_bucket).astype(np.uint64), row < self.n_old)
        candidates = pa.table({"u": pairs[:, 0], "v": pairs[:, 1]}, schema=EDGE_SCHEMA)
        _write_split(candidates, self.shard_of(pairs[:, 0]), out, "pairs-s")
        if self.n_old:
            ids = _read(sorted(self.work.glob(f"sign/*/ids-{k}.parquet")),
                        pa.schema([("id", pa.string()), ("row", pa.int64())]))
            frame = pl.from_arrow(ids)
            old_ids = frame.filter(pl.col("row") < self.n_old)["id"]
            seen = frame.filter((pl.col("row") >= self.n_old) & pl.col("id").is_in(old_ids.implode()))
            seen_rows = seen["row"].to_numpy()
            _write_split(pa.table({"row": seen_rows}), self.shard_of(seen_rows), out, "seen-s")
        return {"rows_out": len(pairs)}

    def task_attach(self, i: int, out: Path) -> dict:
        found = _read(sorted(self.work.glob(f"buckets/*/pairs-s{i}.parquet")), EDGE_SCHEMA)
        pairs = np.unique(np.column_stack([np.asarray(found["u"]), np.asarray(found["v"])]), axis=0) \
            if found.num_rows else np.empty((0, 2), np.int64)
        sigs = matrix(self.signatures(i, ("signature",))["signature"], np.uint32)
        own = sigs[pairs[:, 0] - self.shards[i].first]
        table = pa.table({"u": pairs[:, 0], "v": pairs[:, 1], "signature": fixed_list(own, pa.uint32())})
        _write_split(table, self.shard_of(pairs[:, 1]), out, "s")
        return {"rows_out": len(pairs)}

    def task_verify(self, i: int, out: Path) -> dict:
        found = _read(sorted(self.work.glob(f"attach/*/s{i}.parquet")),
                      pa.schema([*EDGE_SCHEMA, ("signature", pa.list_(pa.uint32(), self.stage.num_perm))]))
        u, v = np.asarray(found["u"], np.int64), np.asarray(found["v"], np.int64)
        sigs = matrix(self.signatures(i, ("signature",))["signature"], np.uint32)
        agree = (matrix(found["signature"], np.uint32) == sigs[v - self.shards[i].first]).sum(axis=1) \
            if len(u) else np.zeros(0, np.int64)
        similar = agree >= self.need
        self._write_edges(u[similar], v[similar], out)
        return {"pairs": int(similar.sum())}

    def _write_edges(self, a: np.ndarray, b: np.ndarray, out: Path) -> None:
        """Undirected edges, each in both directions, filed by their first node."""
        edges = pa.table({"u": np.concatenate([a, b]), "v": np.concatenate([b, a])}, schema=EDGE_SCHEMA)
        _write_split(edges, np.asarray(edges["u"]) % self.node_partitions, out, "p")

    def _edges(self, source: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The unique edges of partition k in step `source`'s output."""
        found = _read(sorted(self.work.glob(f"{source}/*/p{k}.parquet")), EDGE_SCHEMA)
        if not found.num_rows:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        edges = np.unique(np.column_stack([np.asarray(found["u"]), np.asarray(found["v"])]), axis=0)
        return edges[:, 0], edges[:, 1]

    def task_cc(self, t: int, k: int, out: Path) -> dict:
        u, v = self._edges(self.source, k)
        a, b = (large_star if t % 2 == 0 else small_star)(u, v)
        self._write_edges(a, b, out)
        mixed = (u.astype(np.uint64) * MIX + v.astype(np.uint64)) * MIX
        return {"edges": len(u), "checksum": int((mixed ^ (mixed >> np.uint64(29))).sum(dtype=np.uint64))}

    def task_labels(self, k: int, out: Path) -> dict:
        u, v = self._edges(self.final, k)
        nodes, first = np.unique(u, return_index=True)
        label = np.minimum(nodes, np.minimum.reduceat(v, first)) if len(u) else nodes
        _write_split(pa.table({"row": nodes, "label": label}), self.shard_of(nodes), out, "s")
        return {"rows_out": len(nodes)}

    def task_members(self, i: int, out: Path) -> dict:
        shard = self.shards[i]
        found = pl.from_arrow(_read(sorted(self.work.glob(f"labels/*/s{i}.parquet")),
                                    pa.schema([("row", pa.int64()), ("label", pa.int64())]))).sort("row")
        local = found["row"].to_numpy() - shard.first
        rows = self.signatures(i, ("id", "length", "signature")).take(local)
        members = pl.from_arrow(rows).with_columns(found["row"], found["label"], indexed=pl.lit(shard.old))
        previews = [None] * len(local)
        if not shard.old and len(local):
            cache: dict[str, pl.DataFrame] = {}
            texts = pl.concat([compare_text(read_batch(pieces, cache), self.stage.compare).str.slice(0, PREVIEW_CHARS)
                               for _, pieces in shard.batches])
            previews = texts.gather(local)
        members = members.with_columns(pl.Series("preview", previews, dtype=pl.String))
        label_range = found["label"].to_numpy() * self.partitions // self.total
        _write_split(members.to_arrow(), label_range, out, "c")
        return {"rows_out": len(local)}

    def task_clusters(self, k: int, out: Path) -> dict:
        schema = {**MEMBER_SCHEMA, "signature": pl.Array(pl.UInt32, self.stage.num_perm)}
        found = pl.concat([pl.read_parquet(p) for p in sorted(self.work.glob(f"members/*/c{k}.parquet"))] or
                          [pl.DataFrame(schema=schema)], how="vertical_relaxed").sort("row")
        label = np.unique(found["label"].to_numpy(), return_inverse=True)[1]  # labels of this range, from 0
        keeper = keepers(label, found["length"].to_numpy(), found["id"].to_list(), found["indexed"].to_numpy())
        sigs = matrix(found["signature"].to_arrow(), np.uint32)
        clusters = found.with_columns(
            cluster=pl.col("label"), kept=pl.Series(keeper == np.arange(found.height)),
            kept_id=found["id"].gather(keeper), kept_indexed=found["indexed"].gather(keeper),
            estimated_jaccard_to_kept=pl.Series((sigs == sigs[keeper]).mean(axis=1).round(4), dtype=pl.Float64))
        sorted_clusters(clusters).write_parquet(out / "clusters.parquet")
        marks = clusters.filter(~pl.col("kept") & ~pl.col("indexed")).select("row", "kept_id", "kept_indexed")
        _write_split(marks.to_arrow(), self.shard_of(marks["row"].to_numpy()), out, "marks-s")
        return {"clusters": found["label"].n_unique(), "rows_out": found.height}

    def task_apply(self, i: int, out: Path) -> dict:
        shard = self.shards[i]
        reasons: dict[int, str] = {}
        for path in sorted(self.work.glob(f"clusters/*/marks-s{i}.parquet")):
            for row, kept_id, kept_indexed in pl.read_parquet(path).iter_rows():
                reasons[row] = near_reason(kept_id, kept_indexed)
        seen = {row for path in sorted(self.work.glob(f"buckets/*/seen-s{i}.parquet"))
                for row in pl.read_parquet(path)["row"].to_list()}
        cache, row, kept = {}, shard.first, []
        for k, pieces in shard.batches:
            started = time.monotonic()
            batch = read_batch(pieces, cache)
            ids = batch["id"].to_list()
            marks = [seen_reason(ids[j]) if row + j in seen else reasons.get(row + j) for j in range(batch.height)]
            kept.extend(j + row - shard.first for j, mark in enumerate(marks) if mark is None)
            if k == 0:
                started -= self.seconds_before_apply
            self.ctx.counters.clear()
            self.ctx.counters.update(self.counters if k == 0 else {})
            write_part(self.stage_dir, k, with_drops(batch, marks), started, self.ctx.counters)
            row += batch.height
        if self.stage.index:
            table = self.signatures(i).take(np.asarray(kept, dtype=np.int64))
            pq.write_table(table, out / "index.parquet")
        return {"dropped": shard.rows - len(kept), "rows_out": len(kept)}


MEMBER_SCHEMA = {"id": pl.String, "length": pl.Int64, "signature": None, "row": pl.Int64, "label": pl.Int64,
                 "indexed": pl.Boolean, "preview": pl.String}  # signature: an array of num_perm uint32


class _PlanStep(OnWorkers):
    """Runs tasks `todo[id]` of one step; each writes into a fresh directory that is renamed into place when done."""

    def __init__(self, plan: NearPlan, step: str, todo: list[int]):
        self.plan, self.step, self.todo = plan, step, todo

    def _run(self, ids: pa.Table) -> pa.Table:
        done = []
        for position in ids["id"].to_pylist():
            i = self.todo[position]
            final = self.plan.work / self.step / str(i)
            if not final.exists():  # a killed task's leftovers stay in _tmp, where no step reads
                tmp = self.plan.work / "_tmp" / f"{self.step}-{i}-{uuid.uuid4().hex}"
                tmp.mkdir(parents=True)
                final.parent.mkdir(exist_ok=True)
                started = time.monotonic()
                try:
                    if self.step.startswith("cc"):
                        info = self.plan.task_cc(int(self.step[2:]), i, tmp)
                    else:
                        info = getattr(self.plan, f"task_{self.step}")(i, tmp)
                except BaseException:
                    shutil.rmtree(tmp, ignore_errors=True)  # a full disk gets its space back
                    raise
                info["seconds"] = round(time.monotonic() - started, 3)
                info["bytes"] = sum(p.stat().st_size for p in tmp.iterdir())
                (tmp / "_task.json").write_text(json.dumps(info))
                try:
                    os.rename(tmp, final)
                except OSError:  # a retried copy of this task finished first: its output is the same
                    shutil.rmtree(tmp, ignore_errors=True)
            done.append(i)
        return pa.table({"id": pa.array(done, pa.int64())})


def _read(paths: list[Path], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in paths]) if paths else schema.empty_table()


def _write_split(table: pa.Table, part: np.ndarray, out: Path, prefix: str) -> None:
    """Write the rows of `table` into `out/{prefix}{p}.parquet` for each value p of `part` (none for an empty one)."""
    part = np.asarray(part).astype(np.int64)
    order = np.argsort(part, kind="stable")
    values, starts = np.unique(part[order], return_index=True)
    for value, start, end in zip(values, starts, [*starts[1:], len(order)]):
        pq.write_table(table.take(order[start:end]), out / f"{prefix}{value}.parquet", compression="lz4")


def _id_partition(ids: pa.ChunkedArray, partitions: int) -> np.ndarray:
    """A partition per id, the same in every process of one polars version (the plan restarts under another)."""
    return (pl.from_arrow(ids).hash(seed=0) % partitions).to_numpy()
