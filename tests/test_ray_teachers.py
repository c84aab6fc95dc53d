"""Teacher stages on Ray workers (`--engine ray`): the local engine's parts, drops and cache keys; one budget; shared
429s; a lost ledger, a damaged shard and killed workers and drivers end with nothing paid twice. A local Ray instance
(2 CPUs) and the loopback fault server of test_teacher (a real HTTP server: the fault is the point)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
import ray

from pipelines.core.errors import ConfigError, PipelineError, TeacherError
from pipelines.core.runner import Runner
from pipelines.core.stage import Context
from pipelines.engines.ray import RayEngine
from pipelines.engines.teachers import ledger_name
from pipelines.stages.judge import Judge
from pipelines.stages.pairs import COMPLETIONS
from pipelines.teacher.client import Teacher
from pipelines.teacher.config import TeacherConfig
from pipelines.teacher.shards import shard_path
from test_engines import ray_plan_workers
from test_teacher import FaultServer
from test_ultrafeedback import scripted_judge, unrated
from tests.conftest import ROOT

ROWS = 24


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, object_store_memory=300 * 2**20, include_dashboard=False,
             logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture
def judge_server():
    """The scripted listwise judge; a rating request asked for the first time about an odd prompt number gets an
    unreadable answer (the client asks again), so re-asks are part of what must come out the same."""
    rate = scripted_judge(favour_first=False)

    def answer(body: dict) -> str:
        asked = body["messages"][-1]["content"]
        number = int(asked.split("question ")[1].split()[0]) if "question " in asked else 0
        return "no idea" if number % 2 and len(body["messages"]) <= 2 else rate(body)

    server = FaultServer(answer=answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def input_parts(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    completions = [unrated(f"a{i} " * (i % 5 + 1), f"b{i} " * (i % 3 + 1)) for i in range(ROWS)]
    pl.DataFrame({"prompt": [f"question {i} here" for i in range(ROWS)]}).with_columns(
        pl.Series("completions", completions, dtype=COMPLETIONS)).write_parquet(folder / "part-00000.parquet")
    return folder


def run_judge(run_dir: Path, parts: Path, url: str, engine=None, batch_size: int = 4, **options) -> dict:
    stage = Judge(orderings=2, max_tokens=64)
    stage.batch_size = batch_size  # 6 parts by default
    config = TeacherConfig(base_url=url, model="m", reasks=1, **{"max_concurrency": 4, **options})
    teacher = Teacher(config, run_dir / "requests.sqlite", run_dir / "server.log", log=lambda m: None)
    try:
        return Runner([stage], Context(run_dir=run_dir, config=None, clients={"teacher": teacher}),
                      engine).run_on(stage, parts)
    finally:
        teacher.close()


def cache_keys(run_dir: Path) -> set[str]:
    with sqlite3.connect(run_dir / "requests.sqlite") as db:
        return {row[0] for row in db.execute("SELECT key FROM responses")}


def asked(server: FaultServer) -> Counter:
    """How often each distinct request (its messages) reached the server with an answer sent."""
    return Counter(json.dumps(body["messages"]) for body in server.bodies)


def test_a_teacher_stage_on_ray_writes_what_the_local_engine_writes(tmp_path, local_ray, judge_server):
    parts = input_parts(tmp_path / "parts")
    local = run_judge(tmp_path / "local", parts, judge_server.url)
    sent_locally = len(judge_server.bodies)
    on_ray = run_judge(tmp_path / "ray", parts, judge_server.url, RayEngine())
    assert local["rows_out"] == on_ray["rows_out"] == ROWS and local["dropped"] == on_ray["dropped"]
    assert local["counters"] == on_ray["counters"] and local["counters"]["judge_requests"] == ROWS * 2 * 5
    assert on_ray["requests"] == local["requests"] == sent_locally == ROWS * 2 * 5 + 12 * 2 * 5  # odd ones re-asked
    assert on_ray["teacher_events"].get("reasks") == local["teacher_events"].get("reasks") == 12 * 2 * 5
    for k in range(6):
        name = f"01_judge/part-{k:05d}.parquet"
        assert pl.read_parquet(tmp_path / "local" / name).equals(pl.read_parquet(tmp_path / "ray" / name))
    assert cache_keys(tmp_path / "local") == cache_keys(tmp_path / "ray")  # every answer merged, same keys
    assert not (tmp_path / "ray" / "01_judge" / "_cache").exists()  # the shards were merged and removed
    assert max(asked(judge_server).values()) == 2  # each request once per run: once locally, once on Ray
    # a later local run of the same stage hits every answer the workers paid for
    shutil.rmtree(tmp_path / "ray" / "01_judge")
    before = len(judge_server.bodies)
    replay = run_judge(tmp_path / "ray", parts, judge_server.url)
    assert len(judge_server.bodies) == before and replay["cache_hits"] == ROWS * 2 * 5 + 12 * 2 * 5


def test_the_embedded_server_is_refused_on_ray_before_any_work(tmp_path, judge_server):
    parts = input_parts(tmp_path / "parts")
    stage = Judge(orderings=2)
    teacher = Teacher(TeacherConfig(), tmp_path / "requests.sqlite", tmp_path / "server.log", log=lambda m: None)
    runner = Runner([stage], Context(run_dir=tmp_path / "run", config=None, clients={"judge": teacher}), RayEngine())
    with pytest.raises(ConfigError, match="each would start its own embedded model server: point judge.base_url"):
        runner.run()
    assert not (tmp_path / "run").exists() and parts.exists()
    teacher.close()


def test_one_budget_holds_across_workers(tmp_path, local_ray, judge_server):
    """The server bills 150 + 50 tokens an answer at 1 per million tokens (each request reserves more: its prompt,
    estimated, and max_tokens 64); the budget holds 40 answers. Each worker with a budget of its own would spend
    nearly all of it, twice; the ledger holds the total under max_cost."""
    judge_server.usage = (150, 50)
    judge_server.delay = 0.1  # both workers are sending when the budget runs out
    budget = 40 * 200 / 1e6
    parts = input_parts(tmp_path / "parts")
    with pytest.raises(PipelineError, match=f"budget teacher.max_cost={budget:g} reached"):
        run_judge(tmp_path / "run", parts, judge_server.url, RayEngine(), batch_size=12, price_in=1.0,
                  price_out=1.0, max_cost=budget, max_concurrency=4)
    answered = sum(1 for _, _, what in judge_server.hits if what == "ok")
    assert 30 <= answered <= 40 and answered * 200 / 1e6 <= budget  # what the server billed, within the budget
    assert len(cache_keys(tmp_path / "run")) == answered  # what was paid for is in the run's cache


def test_a_429_on_one_worker_slows_every_worker(tmp_path, local_ray, judge_server, monkeypatch):
    """The 30th request gets a 429 asking for 1 s (Retry-After): no worker sends anything until it has passed (the
    other worker learns it from the ledger within its sync interval, 0.2 s)."""
    monkeypatch.setenv("PIPELINES_RAY_TEACHER_WORKERS", "2")
    judge_server.script = ["ok"] * 29 + ["429"]
    judge_server.delay = 0.02
    parts = input_parts(tmp_path / "parts")
    run_judge(tmp_path / "run", parts, judge_server.url, RayEngine(), max_concurrency=2)
    limited = next(t for t, _, what in judge_server.hits if what == "429")
    during = [t for t, _, what in judge_server.hits if limited + 0.3 < t < limited + 0.95]
    assert len({p for _, p, _ in judge_server.hits}) > 1 and judge_server.hits[-1][0] > limited + 1
    assert not during, f"{len(during)} requests were sent while the endpoint asked for a pause"


def test_a_lost_ledger_stops_the_stage_and_the_rerun_resumes(tmp_path, local_ray, judge_server):
    parts = input_parts(tmp_path / "parts")
    judge_server.delay = 0.05
    run_dir = tmp_path / "run"
    failed: list = []

    def run() -> None:
        try:
            run_judge(run_dir, parts, judge_server.url, RayEngine(), max_concurrency=1, price_in=1.0, price_out=1.0,
                      max_cost=100.0)
        except Exception as exc:  # noqa: BLE001
            failed.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60
    while len(judge_server.bodies) < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    fingerprint = (run_dir / "01_judge" / "_FINGERPRINT").read_text()
    ray.kill(ray.get_actor(ledger_name(fingerprint)))
    thread.join(120)
    assert failed and isinstance(failed[0], TeacherError) and "ledger of this stage (a Ray actor) is gone" in \
        str(failed[0])
    assert not (run_dir / "01_judge" / "_SUCCESS.json").exists()
    paid = len(judge_server.bodies)
    assert len(cache_keys(run_dir)) >= paid - 4  # at most what was in flight when it died is not cached
    judge_server.delay = 0.0
    run_judge(run_dir, parts, judge_server.url, RayEngine())
    assert len(cache_keys(run_dir)) == ROWS * 2 * 5 + 12 * 2 * 5
    assert sum(asked(judge_server).values()) <= ROWS * 2 * 5 + 12 * 2 * 5 + 4


def test_a_damaged_shard_is_discarded_counted_and_asked_again(tmp_path, local_ray, judge_server):
    parts = input_parts(tmp_path / "parts")
    run_dir = tmp_path / "run"
    stage_dir = run_dir / "01_judge"
    run_judge(run_dir, parts, judge_server.url, RayEngine())
    (stage_dir / "_SUCCESS.json").unlink()
    (stage_dir / "part-00002.parquet").unlink()  # part 2 must run again, and its shard is torn
    shard = shard_path(stage_dir, 2)
    shard.parent.mkdir(parents=True, exist_ok=True)
    shard.write_bytes(b"SQLite format 3\x00" + os.urandom(3000))
    with sqlite3.connect(run_dir / "requests.sqlite") as db:  # its answers never reached the run's cache
        db.execute("DELETE FROM responses")
    before = len(judge_server.bodies)
    row = run_judge(run_dir, parts, judge_server.url, RayEngine())
    assert row["counters"]["cache_shards_discarded"] == 1 and row["rows_out"] == ROWS
    assert len(judge_server.bodies) - before == 4 * 2 * 5 + 2 * 2 * 5  # part 2's 4 rows, 2 of them re-asked
    assert not shard.exists()


RAY_JUDGE = """import sys, ray
sys.path[:0] = [sys.argv[4], sys.argv[4] + "/tests"]
ray.init(address="local", num_cpus=2, object_store_memory=300 * 2**20, include_dashboard=False,
         logging_level="ERROR")
from pathlib import Path
from pipelines.engines.ray import RayEngine
from test_ray_teachers import run_judge
run_judge(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], RayEngine(), max_concurrency=1)
"""


def test_a_killed_worker_and_a_killed_driver_pay_for_nothing_twice(tmp_path, judge_server):
    """The driver SIGKILLed mid-stage (its Ray instance with it), then a worker killed on the rerun: the rerun merges
    the shards the first run left, Ray retries the killed task, which reads what its first attempt committed."""
    parts = input_parts(tmp_path / "parts")
    judge_server.delay = 0.03
    run_dir = tmp_path / "run"
    script = tmp_path / "ray_judge.py"
    script.write_text(RAY_JUDGE)
    cmd = [sys.executable, str(script), str(run_dir), str(parts), judge_server.url, str(ROOT)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while len(judge_server.bodies) < 60 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)
    assert not (run_dir / "01_judge" / "_SUCCESS.json").exists()
    assert list((run_dir / "01_judge" / "_cache").glob("part-*.sqlite"))  # what the killed run paid for

    proc, killed = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True, start_new_session=True), []
    while proc.poll() is None and not killed:
        if len(judge_server.bodies) > 150:
            for worker in ray_plan_workers("_TeacherParts"):
                worker.kill()
                killed.append(worker.pid)
                break
        time.sleep(0.02)
    assert proc.wait() == 0, proc.stderr.read()[-3000:]
    assert killed
    assert len(cache_keys(run_dir)) == ROWS * 2 * 5 + 12 * 2 * 5
    repeated = {k: n for k, n in asked(judge_server).items() if n > 1}
    assert len(repeated) <= 2 * 4  # at most what was in flight in each killed process


def test_an_endpoint_that_dies_mid_stage_leaves_its_share_to_the_pool(tmp_path, local_ray, judge_server):
    """Two endpoints in the pool; one goes down after 60 answers: each worker's router rests it and the other
    answers the rest: every row comes out, none dropped."""
    other = FaultServer(answer=judge_server.answer)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    judge_server.delay = other.delay = 0.01
    parts = input_parts(tmp_path / "parts")

    def kill_after(n: int) -> None:
        while len(judge_server.bodies) < n:
            time.sleep(0.01)
        judge_server.shutdown()
        judge_server.server_close()

    killer = threading.Thread(target=kill_after, args=(60,), daemon=True)
    killer.start()
    row = run_judge(tmp_path / "run", parts, judge_server.url, RayEngine(), pool=(f"{other.url}?model=m",),
                    max_retries=6, backoff_s=0.05)
    killer.join(5)
    assert row["rows_out"] == ROWS and not row["dropped"]
    assert len(judge_server.bodies) >= 60 and len(other.bodies) > 60
    assert len(cache_keys(tmp_path / "run")) == ROWS * 2 * 5 + 12 * 2 * 5
    other.shutdown()
    other.server_close()


def test_the_cli_refuses_the_embedded_teacher_on_ray_and_waits_for_no_lock(tmp_path, judge_server):
    """`--engine ray` with the embedded teacher: one line before any stage; a run dir another build holds: busy."""
    from pipelines.core.locks import LOCKED, DirLock

    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "pipelines.build", "ultrachat", "--engine", "ray", "--run-dir",
                           str(run)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "point teacher.base_url at an endpoint" in lines[0]
    assert not list(run.glob("0*_*"))
    run.mkdir(exist_ok=True)
    with DirLock(run / ".lock", "another build"):
        proc = subprocess.run([sys.executable, "-m", "pipelines.build", "ultrachat", "--engine", "ray", "--run-dir",
                               str(run), "--set", f"teacher.base_url={judge_server.url}", "--set", "teacher.model=m"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == LOCKED and proc.stderr.strip().startswith("busy: ")


def test_a_teacher_in_batch_mode_stays_on_the_driver(tmp_path, judge_server):
    """Batch mode is one upload per batch from the driver already; an online teacher's stage goes to the workers."""
    stage = Judge(orderings=2)
    engine = RayEngine()
    for mode, on_workers in (("batch", False), ("online", True)):
        teacher = Teacher(TeacherConfig(base_url=judge_server.url, model="m", mode=mode), tmp_path / "r.sqlite",
                          tmp_path / "s.log", log=lambda m: None)
        assert engine.takes(stage, Context(run_dir=tmp_path, config=None, clients={"teacher": teacher})) is on_workers
        teacher.close()


def test_shards_and_the_read_only_cache_open_under_a_path_with_uri_characters(tmp_path):
    """A run dir named with `?`, `#`, `%` and a space: a shard is found intact and the run's cache reads back."""
    from pipelines.teacher.cache import RequestCache
    from pipelines.teacher.shards import ShardCache, intact

    folder = tmp_path / "run ?#% x"
    folder.mkdir()
    cache = RequestCache(folder / "requests.sqlite")
    cache.put("k", "m", {"messages": []}, {"text": "answer"})
    cache.close()
    assert intact(folder / "requests.sqlite")
    shard = ShardCache(shard_path(folder / "01_stage", 0), folder / "requests.sqlite")
    assert shard.discarded == 0 and shard.get("k")["text"] == "answer"
    shard.close()
    assert intact(shard_path(folder / "01_stage", 0))
