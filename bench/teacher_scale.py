"""A teacher stage on 1, 2 and 4 Ray workers against the local engine: requests/s, CPU per request, the budget held.

    python bench/teacher_scale.py [--prompts 2000] [--latency 0.05] [--capacity 64] [--workers 1,2,4]

The stage is ultrafeedback's `Complete` (2 completions per prompt, real system prompts) run by `Runner.run_on` on
`--prompts` fresh prompts, so every request is sent (a fresh run dir each time). The endpoint is a loopback server in
its own process (asyncio): each answer after `--latency` seconds, at most `--capacity` at once (the rest queue, as
on a GPU server's batch), then the same with a 1 ms server. CPU per request is the machine's busy CPU time over the
run (/proc/stat) less the server's own, divided by the requests: the driver, the Ray workers and Ray's own daemons,
all counted. Each client sends at most 64 at once (`teacher.max_concurrency`). Then the budget: a run on 2 workers
with `teacher.max_cost` set to a third of what the stage would cost, and what the server billed against it.

Last, what the projection in docs/ray.md rests on: a ledger round trip (`Ledger.reserve` from the driver, one
caller, then 4 callers at once), and merging cache shards into a run's cache (`--merge-answers` answers in 100
shards): seconds per million answers and bytes per answer.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from loopback import answered, start  # noqa: E402

def busy_cpu() -> float:
    """The machine's busy CPU seconds so far (every core: user, nice, system, irq, softirq, steal)."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:3]) + sum(fields[5:8])) / os.sysconf("SC_CLK_TCK")


def prompts(folder: Path, n: int) -> Path:
    import polars as pl

    from schemas import prompt_id

    folder.mkdir(parents=True, exist_ok=True)
    texts = [f"Question {i}: explain item {i * 7919 % 10007} in two sentences." for i in range(n)]
    pl.DataFrame({"messages": [[{"role": "user", "content": t}] for t in texts],
                  "prompt_id": [prompt_id(t) for t in texts]}).write_parquet(folder / "part-00000.parquet")
    return folder


def run(parts: Path, url: str, workers: int | None, **budget) -> tuple[float, dict]:
    """(seconds, the stage's report row): the local engine when `workers` is None, else Ray with that many."""
    from pipelines.core.runner import Runner
    from pipelines.core.stage import Context
    from pipelines.engines.ray import RayEngine
    from pipelines.stages.ultrafeedback import Complete
    from pipelines.teacher.client import Teacher
    from pipelines.teacher.config import TeacherConfig

    run_dir = Path(tempfile.mkdtemp(prefix="teacher-scale-"))
    stage = Complete(n_completions=2, max_tokens=16)
    teacher = Teacher(TeacherConfig(base_url=url, model="m", max_concurrency=64, **budget), run_dir / "requests.sqlite",
                      run_dir / "server.log", log=lambda m: None)
    if workers is not None:
        os.environ["PIPELINES_RAY_TEACHER_WORKERS"] = str(workers)
    started = time.monotonic()
    try:
        row = Runner([stage], Context(run_dir=run_dir, config=None, clients={"teacher": teacher}),
                     None if workers is None else RayEngine()).run_on(stage, parts)
    except Exception as exc:  # noqa: BLE001  (the budget run stops with its BudgetError)
        row = {"error": str(exc).split(";")[0]}
    finally:
        teacher.close()
    return time.monotonic() - started, row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--capacity", type=int, default=64)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--merge-answers", type=int, default=200_000)
    args = parser.parse_args()
    import ray

    ray.init(address="local", include_dashboard=False, logging_level="ERROR")
    parts = prompts(Path(tempfile.mkdtemp(prefix="teacher-scale-parts-")), args.prompts)
    requests = 2 * args.prompts
    print(f"{requests} requests; each client at most 64 in flight; {os.cpu_count()} cores shared by the server, the "
          "driver and the workers\n")
    print("| server | engine | workers | seconds | requests/s | CPU ms per request (all but the server) |")
    print("|---|---|---|---|---|---|")
    for latency, capacity in ((args.latency, args.capacity), (0.001, 4096)):
        server, port = start(latency, capacity, content="A short answer.", usage=(60, 5))
        url = f"http://127.0.0.1:{port}/v1"
        name = f"{latency * 1000:g} ms, {capacity} at once"
        try:
            budgeted = [(2, {"price_in": 1.0, "price_out": 1.0, "max_cost": 1e9})] if latency == args.latency else []
            for workers, budget in [(None, {}), *((int(w), {}) for w in args.workers.split(",")), *budgeted]:
                cpu, own = busy_cpu(), _cpu_of(server.pid)
                seconds, row = run(parts, url, workers, **budget)
                used = busy_cpu() - cpu - (_cpu_of(server.pid) - own)
                sent = row.get("requests", 0)
                engine = ("local" if workers is None else "ray") + (", a budget (not reached)" if budget else "")
                print(f"| {name} | {engine} | {workers or 1} | {seconds:.1f} | {sent / seconds:.0f} | "
                      f"{1000 * used / max(1, sent):.2f} |", flush=True)
            if latency == args.latency:
                before = answered(port)
                price = 1e6 / 65  # 1.0 per answer at 65 tokens each
                limit = requests / 3
                _, row = run(parts, url, 2, price_in=price, price_out=price, max_cost=limit)
                billed = answered(port) - before
                budget_line = (f"\nBudget on 2 workers: teacher.max_cost={limit:g} (1.0 per answer), the server "
                               f"answered {billed} requests = {billed:.0f} billed, {'within' if billed <= limit else 'OVER'}"
                               f" the budget; the run stopped with: {row.get('error', 'no error')}")
        finally:
            server.kill()
    print(budget_line)
    ledger_costs()
    merge_costs(args.merge_answers)
    ray.shutdown()


def ledger_costs(calls: int = 3000) -> None:
    import ray

    from pipelines.teacher.budget import Reservation
    from pipelines.teacher.config import TeacherConfig
    from pipelines.teacher.ledger import LEASE, Ledger

    ledger = ray.remote(Ledger).options(num_cpus=0).remote({"teacher": (TeacherConfig(max_cost=1e12), 0.0, 0)})
    want, none = Reservation(0.001, 100), Reservation(0.0, 0)
    settle = lambda handle: handle.settle.remote("teacher", none, none, want, LEASE)  # noqa: E731
    ray.get(settle(ledger))
    started = time.perf_counter()
    for _ in range(calls):
        ray.get(settle(ledger))
    one = (time.perf_counter() - started) / calls

    @ray.remote(num_cpus=0)
    def caller(handle, n):
        for _ in range(n):
            ray.get(settle(handle))

    started = time.perf_counter()
    ray.get([caller.remote(ledger, calls) for _ in range(4)])
    rate = 4 * calls / (time.perf_counter() - started)
    print(f"\nLedger: a lease round trip from one caller {one * 1e3:.2f} ms; 4 callers at once {rate:,.0f} round "
          f"trips/s through the one actor, each leasing {LEASE} requests' worst case: {rate * LEASE:,.0f} requests/s")
    ray.kill(ledger)


def merge_costs(answers: int, shards: int = 100) -> None:
    from pipelines.teacher.cache import RequestCache, request_key
    from pipelines.teacher.shards import merge_shards, shard_path

    folder = Path(tempfile.mkdtemp(prefix="teacher-scale-merge-"))
    stage_dir = folder / "01_stage"
    per = answers // shards
    for s in range(shards):
        path = shard_path(stage_dir, s)
        path.parent.mkdir(parents=True, exist_ok=True)
        cache = RequestCache(path)
        cache.db.execute("BEGIN")
        for i in range(per):
            messages = [{"role": "user", "content": f"Question {s}-{i}: explain item {i * 7919 % 10007} briefly."}]
            params = {"max_tokens": 160, "temperature": 0.7, "seed": i}
            cache.put(request_key("m", "http://x/v1", messages, params), "m", {"messages": messages, **params},
                      {"text": "An answer of about two hundred characters. " * 5, "finish_reason": "stop",
                       "prompt_tokens": 60, "completion_tokens": 50}, "http://x/v1", 0.0)
        cache.db.execute("COMMIT")
        cache.close()
    run_cache = RequestCache(folder / "requests.sqlite")
    started = time.perf_counter()
    merged, _ = merge_shards(stage_dir, run_cache)
    seconds = time.perf_counter() - started
    size = (folder / "requests.sqlite").stat().st_size
    print(f"Merge: {merged:,} answers from {shards} shards in {seconds:.1f} s ({seconds / merged * 1e6:.1f} s per "
          f"million answers); the run's cache holds {size / merged:,.0f} bytes per answer (200-character answers)")
    run_cache.close()


def _cpu_of(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


if __name__ == "__main__":
    main()
