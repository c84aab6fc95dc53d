"""Where map stages and near-dedup run: here (`--engine local`, the default) or on Ray Data (`--engine ray`, the
`ray` extra). Same recipes, same checkpoints, same rows out.

What `--engine ray` moves to Ray workers:
- A map stage without a teacher. The driver cuts its input into the batches the local engine makes (batch k holds
  rows `k * batch_size ..` of the previous stage's parts in file order), groups consecutive batches into Ray tasks
  (`ray.data.range(tasks).map_batches(...)`), and each task reads its rows from the Parquet parts as Arrow, runs
  `process` and writes part k itself with the runner's own part writer: drops, `_dropped/`, part metadata and
  `_SUCCESS.json` are exactly the local engine's. So part k holds the same rows under either engine, and a run
  killed under one resumes under the other. (Ray's own batching, `read_parquet().map_batches(batch_size=...)`,
  cuts batches per block, which depends on the cluster; resume needs batch k to be the same rows on every run.)
  Before shipping a stage the driver calls `process` once on an empty batch: one-time setup (Decontaminate loads its
  benchmarks and writes its stats section) then happens once, here, not once per worker.
- Near-dedup's first pass. Workers compute signatures and band keys (`NearDedup.sign`, over the same batch plan);
  the band keys are hash-partitioned by (band, key) across workers (`repartition(keys=...)`, the shuffle Ray's
  `groupby` uses) and each partition sends back the members of its buckets with more than one member. The driver
  sorts those by row and `verify_buckets` checks them by estimated Jaccard: the same pairs as the local sort, so
  the same clusters and kept rows. Clusters, keepers, the index, stats and the second pass (marking rows) run on the
  driver (`NearDedup.resolve`, `apply`), which holds the signatures as the local engine does (about 0.7 GB per
  million rows). Not `groupby(...)`: `map_groups` calls Python once per bucket (millions of them), and
  `aggregate(Count(), AsList("row"))` took 437 s on the band keys of 200k rows here, where repartitioning and one
  vectorized pass per partition took 7 s.

What stays on the driver: sources (ingest reads local files), exact dedup (one set of ids), export (writes one
directory) and every teacher stage: the request cache is one SQLite file and the embedded server listens on the
driver's loopback, so a teacher stage gets its throughput from `teacher.max_concurrency` against a real endpoint.

Ray starts only when a stage needs it (a rerun that skips every stage starts nothing): `RAY_ADDRESS` set joins that
cluster, else a local instance starts (all cores, no dashboard); a Ray session already initialized (a notebook, a
test) is used and left running; Ray Data settings the engine needs (DATA_CONTEXT) are restored after. Workers must
import `pipelines` and see the run dir at the same path: docs/ray.md. A map stage's `seconds` in the report add up
its parts, so under Ray they are worker time, not wall time.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import socket
import time
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core import progress
from pipelines.core.errors import ConfigError, PipelineError
from pipelines.core.runner import Runner, read_parts, rebatch
from pipelines.core.stage import Context, MapStage, Stage
from pipelines.dedup.index import Signed, fixed_list, matrix
from pipelines.stages.dedup import PLANTED_SAMPLE, NearDedup, compare_text

ENGINES = ("local", "ray")
TASK_ROWS = 65_536  # rows per Ray task at most: enough work to hide the task's own cost (tens of ms)
ROWS_PER_PARTITION = 2_000_000  # (band, key, row) rows per shuffle partition: about 40 MB
DATA_CONTEXT = {  # set on Ray Data's context while the engine runs, restored after
    "enable_progress_bars": False,  # the runner draws its own bar per stage
    "print_on_execution_start": False,
    "raise_original_map_exception": True,  # a stage's own error, not "UDF failed to process a data block"
    "shuffle_strategy": "hash_shuffle",  # 3M band keys on 2 cores: 1.6 s; the default (shuffle_v2) took 5.7 s
}


def engine_named(name: str):
    """The engine for `--engine NAME`: None (run everything here) for local, a RayEngine for ray."""
    if name == "local":
        return None
    if name == "ray":
        return RayEngine()
    raise ConfigError(f"unknown engine {name!r}: expected one of {', '.join(ENGINES)}")


Pieces = list[tuple[str, int, int]]  # (part file, first row, rows) that make one batch, in order


def batch_plan(prev_dir: Path, batch_size: int) -> list[Pieces]:
    """The local engine's batches of a finished stage's parts (`rebatch(read_parts(...))`) as file pieces.

    Parts of 3 and 4 rows, batch_size 5 -> `[[(p0, 0, 3), (p1, 0, 2)], [(p1, 2, 2)]]`.
    """
    plan: list[Pieces] = []
    current: Pieces = []
    held = 0
    for path in sorted(prev_dir.glob("part-*.parquet")):
        rows, start = pq.read_metadata(path).num_rows, 0
        while start < rows:
            take = min(rows - start, batch_size - held)
            current.append((str(path.resolve()), start, take))
            start, held = start + take, held + take
            if held == batch_size:
                plan.append(current)
                current, held = [], 0
    if current:
        plan.append(current)
    return plan


def read_batch(pieces: Pieces, cache: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """One batch of a plan; `cache` keeps the files of the previous batch (consecutive batches share a file)."""
    for path in [p for p in cache if p not in {piece[0] for piece in pieces}]:
        del cache[path]
    frames = []
    for path, start, rows in pieces:
        if path not in cache:
            cache[path] = pl.read_parquet(path)
        frames.append(cache[path].slice(start, rows))
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")


Tasks = list[list[tuple[int, Pieces]]]  # task -> its consecutive batches (k, pieces)


class _OnWorkers:
    """A Ray Data UDF over task ids (`_run`); a stage's PipelineError travels back as itself (`_unwrapped`)."""

    def __call__(self, ids: pa.Table) -> pa.Table:
        try:
            return self._run(ids)
        except PipelineError as exc:
            raise _WorkerError(exc) from None


class _MapParts(_OnWorkers):
    """Run a map stage over each task's batches and write their parts; returns (part, rows) per batch."""

    def __init__(self, stage: MapStage, ctx: Context, stage_dir: Path, tasks: Tasks):
        self.stage, self.ctx, self.stage_dir, self.tasks = stage, ctx, stage_dir, tasks

    def _run(self, ids: pa.Table) -> pa.Table:
        writer = Runner([], self.ctx)  # the runner's own part writer; no teacher here, so no teacher stats
        parts, rows = [], []
        for task in ids["id"].to_pylist():
            cache: dict[str, pl.DataFrame] = {}
            for k, pieces in self.tasks[task]:
                batch = read_batch(pieces, cache)
                if not (self.stage_dir / f"part-{k:05d}.parquet").exists():  # a retried task skips what it wrote
                    started = time.monotonic()
                    self.ctx.counters.clear()
                    writer._write_part(self.stage_dir, k, self.stage.process(batch, self.ctx), started, Counter())
                parts.append(k)
                rows.append(batch.height)
        return pa.table({"part": pa.array(parts, pa.int64()), "rows": pa.array(rows, pa.int64())})


class _SignRows(_OnWorkers):
    """Near-dedup's signatures and band keys of each task's batches, with their row numbers in the input."""

    def __init__(self, stage: NearDedup, tasks: Tasks, batch_size: int):
        self.stage, self.tasks, self.batch_size = stage, tasks, batch_size

    def _run(self, ids: pa.Table) -> pa.Table:
        tables = []
        for task in ids["id"].to_pylist():
            cache: dict[str, pl.DataFrame] = {}
            batches = [read_batch(pieces, cache) for _, pieces in self.tasks[task]]
            signed, active, _ = self.stage.sign(iter(batches))
            first = self.tasks[task][0][0] * self.batch_size  # every batch but the last is full
            tables.append(pa.table({
                "row": np.arange(first, first + len(signed), dtype=np.int64),
                "id": pa.array(signed.ids, pa.string()),
                "length": signed.lengths,
                "active": active,
                "sig": fixed_list(signed.sigs, pa.uint32()),
                "keys": fixed_list(signed.keys, pa.uint64()),
            }))
        return pa.concat_tables(tables)


def _band_rows(table: pa.Table, offset: int) -> pa.Table:
    """`(row, keys[bands])` -> one `(band, key, row)` row per band; `offset` is added to the rows."""
    keys = matrix(table["keys"], np.uint64)
    bands = keys.shape[1]
    rows = np.asarray(table["row"], dtype=np.int64) + offset
    return pa.table({"band": np.tile(np.arange(bands, dtype=np.int32), len(rows)), "key": keys.ravel(),
                     "row": np.repeat(rows, bands)})


def _shared_buckets(table: pa.Table) -> pa.Table:
    """The rows of a partition whose (band, key) bucket has more than one member (a partition holds whole buckets)."""
    if not table.num_rows:
        return table
    band, key = np.asarray(table["band"]), np.asarray(table["key"])
    order = np.lexsort((key, band))
    band, key = band[order], key[order]
    same = (band[1:] == band[:-1]) & (key[1:] == key[:-1])
    shared = np.zeros(len(order), np.bool_)
    shared[1:] |= same
    shared[:-1] |= same
    return table.take(order[shared])


def bucket_runs(found: pa.Table) -> list[tuple[np.ndarray, np.ndarray]]:
    """`(band, key, row)` rows of shared buckets -> one `(order, sorted_keys)` run for `verify_buckets`: members in
    row order within a bucket (as the local stable sort leaves them), a new label per bucket."""
    band, key, row = (np.asarray(found[c]) for c in ("band", "key", "row"))
    order = np.lexsort((row, key, band))
    band, key, row = band[order], key[order], row[order]
    new_bucket = np.ones(len(row), np.bool_)
    new_bucket[1:] = (band[1:] != band[:-1]) | (key[1:] != key[:-1])
    return [(row, np.cumsum(new_bucket).astype(np.uint64))]


class RayEngine:
    """Runs map stages without a teacher and near-dedup's first pass on Ray Data (see the module docstring)."""

    def __init__(self):
        if importlib.util.find_spec("ray") is None:
            raise ConfigError("--engine ray needs Ray Data: pip install 'convoforge[ray]'")
        self._started = False  # whether this engine called ray.init (and so calls ray.shutdown)
        self._saved: dict | None = None  # Ray Data's context as it was before _start

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self._saved is not None:
            import ray.data
            context = ray.data.DataContext.get_current()
            for name, value in self._saved.items():
                setattr(context, name, value)
        if self._started:
            import ray
            ray.shutdown()
        self._started, self._saved = False, None

    def takes(self, stage: Stage) -> bool:
        """Whether this engine runs `stage` (else the runner runs it here; its plans do not keep groups whole)."""
        return stage.parallel in ("rows", "signatures") and stage.group_by is None

    def run(self, runner: Runner, stage: Stage, stage_dir: Path, prev_dir: Path, task) -> None:
        if stage.parallel == "signatures":
            read_input = lambda: rebatch(read_parts(prev_dir), stage.batch_size, stage.group_by)  # noqa: E731
            runner._run_two_pass(stage, stage_dir, read_input, task,
                                 scan=lambda: self._scan_near(stage, prev_dir, runner.ctx, task))
        else:
            self._run_map(stage, stage_dir, prev_dir, runner.ctx, task)

    def _start(self):
        import ray
        import ray.data
        if self._saved is None:
            if not ray.is_initialized():
                address = os.environ.get("RAY_ADDRESS")
                if address:
                    if not _reachable(address):  # ray.init would retry for minutes, saying little
                        raise ConfigError(f"no Ray cluster answers at RAY_ADDRESS={address}: start one (docs/ray.md) "
                                          "or unset RAY_ADDRESS to run on a local Ray instance")
                    ray.init(address=address, logging_level=logging.WARNING)
                else:  # "local": not a cluster that `ray start` once left in /tmp/ray (ray.init's own default)
                    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
                self._started = True
            context = ray.data.DataContext.get_current()
            self._saved = {name: getattr(context, name) for name in DATA_CONTEXT}
            for name, value in DATA_CONTEXT.items():
                setattr(context, name, value)
            logging.getLogger("ray.data").setLevel(logging.WARNING)
            logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"
        return ray

    def _cpus(self) -> int:
        return max(1, int(self._start().cluster_resources().get("CPU", 1)))

    def _tasks(self, plan: list[Pieces], todo: list[int], batch_size: int) -> Tasks:
        """Consecutive batches grouped into tasks: at most TASK_ROWS rows each, and two tasks per CPU when there is
        enough input."""
        per_task = max(1, min(TASK_ROWS // batch_size, math.ceil(len(todo) / (2 * self._cpus()))))
        tasks, current = [], []
        for k in todo:
            if current and (len(current) == per_task or current[-1][0] != k - 1):
                tasks.append(current)
                current = []
            current.append((k, plan[k]))
        return tasks + [current] if current else tasks

    def _on_workers(self, tasks: Tasks, udf: _OnWorkers):
        """A dataset of `udf` over the task ids, one Ray task each (lazy: run it inside `_unwrapped`)."""
        return self._start().data.range(len(tasks), override_num_blocks=len(tasks)).map_batches(
            udf, batch_size=1, batch_format="pyarrow")

    def _run_map(self, stage: MapStage, stage_dir: Path, prev_dir: Path, ctx: Context, task) -> None:
        plan = batch_plan(prev_dir, stage.batch_size)
        todo = [k for k in range(len(plan)) if not (stage_dir / f"part-{k:05d}.parquet").exists()]
        waiting = set(todo)
        progress.advance(task, sum(rows for k, pieces in enumerate(plan) if k not in waiting for _, _, rows in pieces))
        if not todo:
            return
        stage.process(pl.read_parquet(plan[todo[0]][0][0], n_rows=0), ctx)  # one-time setup, here (module docstring)
        worker_ctx = Context(run_dir=ctx.run_dir.resolve(), config=ctx.config, limit=ctx.limit,
                             fingerprint=ctx.fingerprint)
        tasks = self._tasks(plan, todo, stage.batch_size)
        written = self._on_workers(tasks, _MapParts(stage, worker_ctx, stage_dir.resolve(), tasks))

        def run() -> None:  # the bar moves as tasks finish
            for done in written.iter_batches(batch_size=None, batch_format="pyarrow"):
                progress.advance(task, sum(done["rows"].to_pylist()))

        _unwrapped(run)

    def _scan_near(self, stage: NearDedup, prev_dir: Path, ctx: Context, task) -> None:
        plan = batch_plan(prev_dir, stage.batch_size)
        if not plan:
            stage.scan(iter(()), ctx)
            return
        tasks = self._tasks(plan, list(range(len(plan))), stage.batch_size)
        signed_ds = _unwrapped(self._on_workers(tasks, _SignRows(stage, tasks, stage.batch_size)).materialize)
        ray = self._start()
        table = pa.concat_tables(ray.get(signed_ds.to_arrow_refs())).sort_by("row")  # the rows in input order
        progress.advance(task, table.num_rows)
        new = Signed(table["id"].to_pylist(), np.asarray(table["length"], np.int64), matrix(table["sig"], np.uint32),
                     matrix(table["keys"], np.uint64))
        sample: list[str] = []
        for batch in filter(len, read_parts(prev_dir)):  # the local engine's sample: the first texts, in order
            sample.extend(compare_text(batch, stage.compare).head(PLANTED_SAMPLE - len(sample)).to_list())
            if len(sample) >= PLANTED_SAMPLE:
                break

        def buckets(both: Signed, n_old: int) -> list[tuple[np.ndarray, np.ndarray]]:
            rows = signed_ds.select_columns(["row", "keys"]).map_batches(
                _band_rows, fn_kwargs={"offset": n_old}, batch_format="pyarrow")
            if n_old:  # the persistent index's rows come first, as in `both`
                old = pa.table({"row": np.arange(n_old, dtype=np.int64),
                                "keys": fixed_list(both.keys[:n_old], pa.uint64())})
                rows = ray.data.from_arrow(old).map_batches(_band_rows, fn_kwargs={"offset": 0},
                                                            batch_format="pyarrow").union(rows)
            partitions = max(2 * self._cpus(), math.ceil(len(both) * stage.bands / ROWS_PER_PARTITION))
            shared = rows.repartition(partitions, keys=["band", "key"]).map_batches(
                _shared_buckets, batch_size=None, batch_format="pyarrow")
            return bucket_runs(_unwrapped(lambda: pa.concat_tables(ray.get(shared.materialize().to_arrow_refs()))))

        stage.resolve(new, np.asarray(table["active"], np.bool_), sample, ctx, buckets=buckets)


def _reachable(address: str) -> bool:
    """Whether a `host:port` address accepts a TCP connection; other forms (`ray://...`, `auto`) are left to Ray."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return True
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError:
        return False
    return True


class _WorkerError(Exception):
    """Carries a stage's PipelineError from a Ray worker as it was: Ray appends retry advice to an exception's
    message, which would end the CLI's one-line error with three lines about Ray."""


def _unwrapped(call):
    """`call()`, with a PipelineError that a Ray worker raised re-raised as itself, so the CLI prints its one line
    (a RayTaskError holds the worker's exception as `cause`)."""
    try:
        return call()
    except Exception as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, _WorkerError):
            raise cause.args[0] from None
        raise
