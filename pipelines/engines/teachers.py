"""Teacher stages on Ray workers (`--engine ray`): the batches of a map stage that asks a teacher go to Ray tasks,
each with its own clients and endpoint pool, one cache shard per part and one ledger for the budget and 429s.

- **Which stages**: a map stage that asks a teacher (`Asks`), not grouped, whose clients are endpoints answering
  online. One in batch mode stays on the driver (it is one upload per batch already). The embedded server is
  refused before the run starts, in one line: each worker would start a model server of its own.
- **Rows**: part k holds batch k of the previous stage's parts (`batch_plan`), as on the local engine, and one Ray
  task sends it: a row's requests are sent by the one task holding its batch, on a rerun too, so the same row is
  never asked by two workers. (Two rows with identical requests in two batches can both be sent, as two batches run
  at once; a stage after exact dedup rarely has them.)
- **One cache**: the task of part k reads the run's cache as a read-only snapshot and writes
  `_cache/part-k.sqlite` (`pipelines.teacher.shards`); the driver merges the shards into the run's cache when the
  stage starts (what a killed run left) and when it ends, also when it fails.
- **One budget, shared 429s**: a `Ledger` actor per stage (`pipelines.teacher.ledger`); budgets are leased to the
  workers in blocks of requests.
- **Same results**: the same batches, the same requests (cache keys), the same `process`: a stage writes the parts,
  drops and counters it writes locally. A killed task is retried by Ray and reads the answers its first attempt
  committed; a killed driver leaves shards that the rerun merges first, so no answer is paid for twice.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pipelines.core import progress
from pipelines.core.errors import TeacherError
from pipelines.core.parts import write_part
from pipelines.core.runner import teacher_stats
from pipelines.core.stage import Context, MapStage, Stage
from pipelines.engines.ray import BatchParts, batch_plan, pending_batches, worker_context
from pipelines.teacher.stage import serving_role

WORKERS_ENV = "PIPELINES_RAY_TEACHER_WORKERS"  # teacher tasks at once (default: one per CPU of the cluster)
TASK_BATCHES = 8  # batches per task at most: a task's clients and connections serve them all


def sends(stage: Stage) -> bool:
    """Whether a stage is a teacher map stage Ray can run (the clients decide the rest: `on_driver`, `refusal`)."""
    return getattr(stage, "uses_teacher", False) and isinstance(stage, MapStage) and stage.group_by is None


def clients_of(stage: Stage, ctx: Context) -> dict:
    """The run's clients this stage may ask, under the roles the run holds them by (`FALLBACKS`)."""
    keys = (serving_role(role, ctx.clients) for role in (stage.teacher_role, *getattr(stage, "other_roles", ())))
    return {key: ctx.clients[key] for key in keys if key is not None}


def on_driver(stage: Stage, ctx: Context) -> bool:
    """A teacher stage in batch mode sends one upload per batch from the driver."""
    return any(c.config.mode == "batch" for c in clients_of(stage, ctx).values())


def refusal(stages: list[Stage], ctx: Context) -> str | None:
    """Why `--engine ray` cannot run these stages, in one line: a worker would start an embedded server."""
    if (value := os.environ.get(WORKERS_ENV)) and not (value.isdigit() and int(value) > 0):
        return f"{WORKERS_ENV}={value}: the number of teacher tasks at once, at least 1"
    for stage in stages:
        if sends(stage) and not on_driver(stage, ctx):
            for role, client in clients_of(stage, ctx).items():
                if any(e.base_url is None for e in client.endpoints):
                    return (f"--engine ray sends {stage.name}'s requests from Ray workers, and each would start its "
                            f"own embedded model server: point {role}.base_url at an endpoint (llama-server, vLLM, "
                            "an API) or build with --engine local")
    return None


def ledger_name(fingerprint: str) -> str:
    """The ledger actor's name (`ray.get_actor`): one per stage fingerprint."""
    return f"pipelines-ledger-{fingerprint[:16]}"


def run_teacher_stage(engine, stage: MapStage, stage_dir: Path, prev_dir: Path, ctx: Context, task) -> None:
    import ray

    from pipelines.teacher.ledger import Ledger
    from pipelines.teacher.shards import merge_shards

    clients = clients_of(stage, ctx)
    run_cache = next(iter(clients.values())).cache
    plan = batch_plan(prev_dir, stage.batch_size)
    todo = pending_batches(plan, stage_dir, task)
    merged, discarded = merge_shards(stage_dir, run_cache, keep=set(todo))
    if merged or discarded:
        progress.console.log(f"{stage.name}: {merged} answers merged from the cache shards a stopped run left"
                             + (f", {discarded} damaged shards discarded" if discarded else ""))
    if not todo:
        return
    budgets = {}
    for role, client in clients.items():
        client.budget.refresh()
        budgets[role] = (client.config, client.budget.cost, client.budget.tokens)
    ledger = ray.remote(Ledger).options(num_cpus=0, name=ledger_name(ctx.fingerprint)).remote(budgets)
    cpus = engine._cpus()
    workers = int(os.environ.get(WORKERS_ENV) or cpus)
    tasks = engine._tasks(plan, todo, TASK_BATCHES, workers)
    workers = min(workers, len(tasks))
    udf = _TeacherParts(stage, worker_context(ctx), stage_dir.resolve(), tasks,
                        {role: c.config for role, c in clients.items()}, Path(run_cache.path).resolve(), ledger)
    try:
        engine.write_parts(tasks, udf, task, num_cpus=min(1.0, cpus / workers),
                           compute=ray.data.TaskPoolStrategy(size=workers))
    finally:
        merge_shards(stage_dir, run_cache)
        ray.kill(ledger)


class _TeacherParts(BatchParts):
    """Send each task's batches with clients of the task's own (one event loop, open connections, the ledger's
    budget and limit) and a cache shard per batch, and write each batch's part."""

    def __init__(self, stage: MapStage, ctx: Context, stage_dir: Path, tasks, configs: dict, run_cache: Path, ledger):
        super().__init__(stage, ctx, stage_dir, tasks)
        self.configs, self.run_cache, self.ledger = configs, run_cache, ledger
        self.clients: dict = {}  # the task's, made on its first batch

    def _task_done(self) -> None:
        for client in self.clients.values():
            try:
                client.budget.flush()  # the lease back to the ledger, for the other workers
            except TeacherError:
                pass  # the ledger is gone: the stage stops with that line already
            client.close()
        self.clients = {}

    def _write(self, k: int, batch) -> None:
        """Ask batch k's requests through the task's clients over part k's shard."""
        from pipelines.teacher.client import Teacher
        from pipelines.teacher.ledger import LedgerBudget, SharedLimit
        from pipelines.teacher.shards import ShardCache, shard_path

        shard = shard_path(self.stage_dir, k)
        shard.parent.mkdir(parents=True, exist_ok=True)
        clients, discarded = self.clients, 0
        for role, config in self.configs.items():
            cache = ShardCache(shard, self.run_cache)
            discarded += cache.discarded
            if role in clients:
                clients[role].cache.close()
                clients[role].cache = cache
                continue
            client = clients[role] = Teacher(config, shard, shard.with_suffix(".log"), log=lambda m: None, role=role,
                                             cache=cache)
            client.budget = LedgerBudget(self.ledger, config, role)
            names = [e.name for e in client.endpoints]
            client.make_limit = lambda maximum, names=names: SharedLimit(maximum, self.ledger, names)
        ctx = Context(run_dir=self.ctx.run_dir, config=self.ctx.config, clients=clients, limit=self.ctx.limit,
                      fingerprint=self.ctx.fingerprint)
        before = teacher_stats(clients)
        started = time.monotonic()
        out = self.stage.process(batch, ctx)
        if discarded:
            ctx.count("cache_shards_discarded", discarded)
        write_part(self.stage_dir, k, out, started, ctx.counters, teacher_stats(clients) - before)
