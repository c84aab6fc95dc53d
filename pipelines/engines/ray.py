"""The Ray engine (`--engine ray`, the `ray` extra): map stages and near-dedup on Ray Data. Same recipes, same
checkpoints, same rows out as the local engine.

What `--engine ray` moves to Ray workers:
- A map stage without a teacher. The driver cuts its input into the batches the local engine makes (batch k holds
  rows `k * batch_size ..` of the previous stage's parts in file order), groups consecutive batches into Ray tasks
  (`ray.data.range(tasks).map_batches(...)`), and each task reads its rows from the Parquet parts as Arrow, runs
  `process` and writes part k itself with the runner's own part writer (`pipelines.core.parts.write_part`): drops,
  `_dropped/`, part metadata and `_SUCCESS.json` are exactly the local engine's. So part k holds the same rows under
  either engine, and a run killed under one resumes under the other. (Ray's own batching,
  `read_parquet().map_batches(batch_size=...)`, cuts batches per block, which depends on the cluster; resume needs
  batch k to be the same rows on every run.)
  Before shipping a stage the driver calls `process` once on an empty batch: one-time setup (Decontaminate loads its
  benchmarks and writes its stats section) then happens once, here, not once per worker.
- Near-dedup, whole: signatures, buckets, verified pairs, connected components, keepers, drop reasons and the
  marking pass, as steps of Ray tasks that exchange Parquet files in the run dir, so no process holds every
  signature or every edge (`pipelines/engines/near.py`). Ray Data's own shuffles (`repartition`, `groupby`) keep
  their blocks in the object store: a killed driver loses them, and `aggregate(Count(), AsList("row"))` took 437 s
  on the band keys of 200k rows here where a vectorized pass per partition took 7 s.

- A map stage that asks a teacher endpoint: its batches on Ray tasks with clients of their own, a cache shard per
  part and one ledger for the budget and 429s (`pipelines/engines/teachers.py`). The embedded server is refused
  before the run starts (each worker would start one).

What stays on the driver: sources (ingest reads local files), exact dedup (one set of ids), export (writes one
directory), grouped stages and a teacher stage in batch mode (one upload per batch).

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
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core import progress
from pipelines.core.errors import ConfigError, PipelineError, ResourceError, describe_os_error
from pipelines.core.parts import write_part
from pipelines.core.runner import Runner
from pipelines.core.stage import Context, MapStage, Stage

TASK_ROWS = 65_536  # rows per Ray task at most: enough work to hide the task's own cost (tens of ms)
DATA_CONTEXT = {  # set on Ray Data's context while the engine runs, restored after
    "enable_progress_bars": False,  # the runner draws its own bar per stage
    "print_on_execution_start": False,
    "raise_original_map_exception": True,  # a stage's own error, not "UDF failed to process a data block"
    "shuffle_strategy": "hash_shuffle",  # 3M band keys on 2 cores: 1.6 s; the default (shuffle_v2) took 5.7 s
}


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


class OnWorkers:
    """A Ray Data UDF over task ids (`_run`); a stage's PipelineError, or a worker's full disk as a ResourceError,
    travels back as itself (`unwrapped`)."""

    def __call__(self, ids: pa.Table) -> pa.Table:
        try:
            return self._run(ids)
        except PipelineError as exc:
            raise _WorkerError(exc) from None
        except OSError as exc:
            if (line := describe_os_error(exc)) is None:
                raise
            raise _WorkerError(ResourceError(f"a Ray worker on {socket.gethostname()}: {line}")) from None


class BatchParts(OnWorkers):
    """Each task's batches in turn: `_write(k, batch)` writes part k unless it exists (a retried task skips what it
    wrote), `_task_done()` after each task, even a failed one; returns (part, rows) per batch."""

    def __init__(self, stage: MapStage, ctx: Context, stage_dir: Path, tasks: Tasks):
        self.stage, self.ctx, self.stage_dir, self.tasks = stage, ctx, stage_dir, tasks

    def _run(self, ids: pa.Table) -> pa.Table:
        parts, rows = [], []
        for task in ids["id"].to_pylist():
            cache: dict[str, pl.DataFrame] = {}
            try:
                for k, pieces in self.tasks[task]:
                    batch = read_batch(pieces, cache)
                    if not (self.stage_dir / f"part-{k:05d}.parquet").exists():
                        self._write(k, batch)
                    parts.append(k)
                    rows.append(batch.height)
            finally:
                self._task_done()
        return pa.table({"part": pa.array(parts, pa.int64()), "rows": pa.array(rows, pa.int64())})

    def _write(self, k: int, batch: pl.DataFrame) -> None:
        raise NotImplementedError

    def _task_done(self) -> None:
        """Free what a task held (a teacher stage's clients)."""


class _MapParts(BatchParts):
    """Run a map stage over each task's batches and write their parts."""

    def _write(self, k: int, batch: pl.DataFrame) -> None:
        started = time.monotonic()
        self.ctx.counters.clear()
        write_part(self.stage_dir, k, self.stage.process(batch, self.ctx), started, self.ctx.counters)


def worker_context(ctx: Context) -> Context:
    """What a worker's stage sees of the driver's context: the run dir (absolute), config, limit and fingerprint;
    no clients (a teacher stage's workers make their own)."""
    return Context(run_dir=ctx.run_dir.resolve(), config=ctx.config, limit=ctx.limit, fingerprint=ctx.fingerprint)


def pending_batches(plan: list[Pieces], stage_dir: Path, task) -> list[int]:
    """The batches of `plan` whose part is not written yet; the progress bar counts the rows of the others."""
    todo = [k for k in range(len(plan)) if not (stage_dir / f"part-{k:05d}.parquet").exists()]
    waiting = set(todo)
    progress.advance(task, sum(rows for k, pieces in enumerate(plan) if k not in waiting for _, _, rows in pieces))
    return todo


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

    def check(self, stages: list[Stage], ctx: Context) -> None:
        """Before any stage runs: a teacher stage Ray cannot run (the embedded server) stops the run in one line."""
        from pipelines.engines.teachers import refusal

        if problem := refusal(stages, ctx):
            raise ConfigError(problem)

    def takes(self, stage: Stage, ctx: Context | None = None) -> bool:
        """Whether this engine runs `stage` (else the runner runs it here; its plans do not keep groups whole): map
        stages without a teacher, near-dedup, and teacher map stages (with `ctx`: unless their teacher is in batch
        mode, `pipelines.engines.teachers`)."""
        from pipelines.engines.teachers import on_driver, sends

        if sends(stage):
            return ctx is None or not on_driver(stage, ctx)
        return stage.parallel in ("rows", "signatures") and stage.group_by is None

    def run(self, runner: Runner, stage: Stage, stage_dir: Path, prev_dir: Path, task) -> None:
        from pipelines.engines.teachers import run_teacher_stage, sends

        if sends(stage):
            run_teacher_stage(self, stage, stage_dir, prev_dir, runner.ctx, task)
        elif stage.parallel == "signatures":
            from pipelines.engines.near import NearPlan  # it builds on this module's helpers
            NearPlan(stage, runner.ctx, prev_dir, stage_dir).run(self, task)
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
            # a task's error comes back as the exception itself (`unwrapped`): its traceback logged first would end
            # a stage's one-line error (a budget reached on a worker) with a hundred lines about Ray
            for name in ("ray.data._internal.execution.streaming_executor_state", "ray.data.exceptions"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
        return ray

    def _cpus(self) -> int:
        return max(1, int(self._start().cluster_resources().get("CPU", 1)))

    def _tasks(self, plan: list[Pieces], todo: list[int], most: int, workers: int | None = None) -> Tasks:
        """Consecutive batches grouped into tasks: at most `most` batches each, and two tasks per worker (default:
        per CPU) when there is enough input."""
        per_task = max(1, min(most, math.ceil(len(todo) / (2 * (workers or self._cpus())))))
        tasks, current = [], []
        for k in todo:
            if current and (len(current) == per_task or current[-1][0] != k - 1):
                tasks.append(current)
                current = []
            current.append((k, plan[k]))
        return tasks + [current] if current else tasks

    def on_workers(self, tasks: Tasks, udf: OnWorkers, **options):
        """A dataset of `udf` over the task ids, one Ray task each (lazy: run it inside `unwrapped`); `options` go to
        `map_batches` (`num_cpus`, `compute`)."""
        return self._start().data.range(len(tasks), override_num_blocks=len(tasks)).map_batches(
            udf, batch_size=1, batch_format="pyarrow", **options)

    def write_parts(self, tasks: Tasks, udf: BatchParts, task, **options) -> None:
        """Run `udf` over `tasks` on the workers; the progress bar moves as tasks finish."""
        written = self.on_workers(tasks, udf, **options)

        def run() -> None:
            for done in written.iter_batches(batch_size=None, batch_format="pyarrow"):
                progress.advance(task, sum(done["rows"].to_pylist()))

        unwrapped(run)

    def _run_map(self, stage: MapStage, stage_dir: Path, prev_dir: Path, ctx: Context, task) -> None:
        plan = batch_plan(prev_dir, stage.batch_size)
        if not (todo := pending_batches(plan, stage_dir, task)):
            return
        stage.process(pl.read_parquet(plan[todo[0]][0][0], n_rows=0), ctx)  # one-time setup, here (module docstring)
        tasks = self._tasks(plan, todo, TASK_ROWS // stage.batch_size)
        self.write_parts(tasks, _MapParts(stage, worker_context(ctx), stage_dir.resolve(), tasks), task)


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


def unwrapped(call):
    """`call()`, with a PipelineError that a Ray worker raised re-raised as itself, so the CLI prints its one line
    (a RayTaskError holds the worker's exception as `cause`)."""
    try:
        return call()
    except Exception as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, _WorkerError):
            raise cause.args[0] from None
        raise
