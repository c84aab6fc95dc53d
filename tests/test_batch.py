"""Batch mode and budgets against a loopback server speaking OpenAI's Files and Batch APIs (tests/batch_server.py):
batches that complete, partly fail, expire, fail or return malformed lines; a killed run; budgets that must hold."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batch_server import BatchServer
from conftest import ROOT
from pipelines.core.errors import ConfigError, TeacherError
from pipelines.teacher.budget import BudgetError
from pipelines.teacher.client import Teacher
from pipelines.teacher.config import TeacherConfig
from pipelines.teacher.wire import Request

FAST = {"batch_poll_s": 0.05, "batch_poll_max_s": 0.2, "backoff_s": 0.01}
SCHEMA = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}}


@pytest.fixture
def batch_server(serve):
    return lambda **kwargs: serve(BatchServer(**kwargs))


def teacher(server, path: Path, **options) -> Teacher:
    config = TeacherConfig(base_url=server.url, model="m", **{**FAST, **options})
    return Teacher(config, path / "requests.sqlite", path / "server.log", log=lambda m: None)


def asks(n: int, max_tokens: int = 16) -> list[Request]:
    return [Request([{"role": "user", "content": f"question {i}"}], {"max_tokens": max_tokens, "temperature": 0.0})
            for i in range(n)]


def keys_of(path: Path) -> set[str]:
    with sqlite3.connect(path / "requests.sqlite") as db:
        return {row[0] for row in db.execute("SELECT key FROM responses")}


def test_a_stage_answered_by_batch_equals_the_same_stage_answered_online(batch_server, tmp_path):
    server = batch_server()
    (tmp_path / "online").mkdir()
    (tmp_path / "batch").mkdir()
    online = teacher(server, tmp_path / "online")
    by_batch = teacher(server, tmp_path / "batch", mode="batch", price_in=2.0, price_out=8.0, batch_max_requests=7)
    requests = asks(20) + [Request([{"role": "user", "content": "as json"}], {"max_tokens": 8}, schema=SCHEMA)]
    first = online.chat_many(requests)
    second = by_batch.chat_many(requests)
    assert [r.text for r in first] == [r.text for r in second] and all(r.error is None for r in first[:20])
    assert keys_of(tmp_path / "online") == keys_of(tmp_path / "batch")  # same cache keys, whichever mode
    assert server.batch_sizes[:3] == [7, 7, 7]  # 21 requests under a 7-request limit, the first round
    assert by_batch.stats["batches"] >= 3 and server.online == len(keys_of(tmp_path / "online"))  # only it sent online
    # the echo is no JSON: re-asked in later rounds, as online, then an error
    assert first[-1].error and first[-1].error.startswith("invalid_json") and second[-1].error == first[-1].error
    assert by_batch.stats["cost"] == pytest.approx(by_batch.stats["cost_online"] / 2)  # half the price
    again = by_batch.chat_many(requests)
    assert [r.cached for r in again[:20]] == [True] * 20 and server.creates == by_batch.stats["batches"]


def test_per_request_errors_become_drop_reasons_and_malformed_lines_are_asked_again(batch_server, tmp_path):
    server = batch_server(outcomes=["partial", "malformed"])
    client = teacher(server, tmp_path, mode="batch", batch_max_requests=9)
    results = client.chat_many(asks(18))
    failed = [r for r in results if r.error]
    assert failed and all(r.error == "http 400: the prompt was flagged" for r in failed)  # the run goes on
    assert len(failed) == 3  # every third line of the partial batch
    assert client.stats["batch_malformed_lines"] == 2 and client.stats["batch_resubmitted"] == 2
    assert server.batch_sizes == [9, 9, 2]  # only the two unreadable lines went again
    assert all(r.text == f"echo question {i}" for i, r in enumerate(results) if not r.error)


def test_expired_and_failed_batches_resubmit_only_what_is_missing(batch_server, tmp_path):
    server = batch_server(outcomes=["expired", "failed"])
    client = teacher(server, tmp_path, mode="batch")
    results = client.chat_many(asks(10))
    assert all(r.error is None for r in results)
    assert server.batch_sizes == [10, 5, 5]  # expired: half answered; failed: nothing; then the five again
    assert client.stats["batch_resubmitted"] == 10 and client.stats["batches_expired"] == 1
    assert client.stats["batches_failed"] == 1
    assert max(server.answered.values()) == 1  # no request answered twice

    lost = batch_server(outcomes=["failed"] * 5)
    results = teacher(lost, tmp_path / "x", mode="batch", batch_resubmits=1).chat_many(asks(3))
    assert all(r.error == "batch failed: no answer after 2 submissions" for r in results)

    fallback = batch_server(outcomes=["expired"])
    client = teacher(fallback, tmp_path / "y", mode="batch", batch_fallback="online")
    assert all(r.error is None for r in client.chat_many(asks(6)))
    assert fallback.online == 3 and client.stats["batch_to_online"] == 3


def test_a_server_without_a_batch_api_is_named(batch_server, tmp_path):
    server = batch_server(batches_api=False)
    with pytest.raises(TeacherError, match="no Batch API .* vLLM"):
        teacher(server, tmp_path, mode="batch").chat_many(asks(2))
    with pytest.raises(ConfigError, match="mode=batch"):
        Teacher(TeacherConfig(mode="batch"), tmp_path / "r.sqlite", tmp_path / "s.log")


POLLER = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from pipelines.teacher.client import Teacher
from pipelines.teacher.config import TeacherConfig
from pipelines.teacher.wire import Request
config = TeacherConfig(base_url={url!r}, model="m", mode="batch", batch_poll_s=0.05, batch_poll_max_s=0.1)
client = Teacher(config, Path({cache!r}), Path({log!r}), log=print)
results = client.chat_many([Request([{{"role": "user", "content": f"question {{i}}"}}], {{"max_tokens": 4}})
                            for i in range(12)])
print("answered", sum(r.error is None for r in results), "resumed", client.stats["batches_resumed"], flush=True)
"""


def test_a_run_killed_while_polling_resumes_the_same_batches(batch_server, tmp_path):
    server = batch_server(delay_s=3.0)
    script = tmp_path / "poll.py"
    script.write_text(POLLER.format(tests=str(ROOT / "tests"), url=server.url, cache=str(tmp_path / "r.sqlite"),
                                    log=str(tmp_path / "s.log")))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while server.creates < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # polling now
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert server.creates == 1
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "answered 12 resumed 1" in done.stdout, done.stderr[-2000:]
    assert server.creates == 1 and max(server.answered.values()) == 1  # one create per batch, nothing paid twice
    # a run that died after creating its batch but before recording it: found by its lines' hash, not paid twice
    (tmp_path / "r.sqlite").unlink()
    for side in ("-wal", "-shm"):
        (tmp_path / f"r.sqlite{side}").unlink(missing_ok=True)
    again = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "answered 12 resumed 0" in again.stdout and server.creates == 1, again.stderr[-2000:]


def test_budgets_stop_before_overspending_and_a_larger_budget_finishes_without_asking_twice(batch_server, tmp_path):
    server = batch_server()
    prices = {"price_in": 1000.0, "price_out": 1000.0}  # 1000 per million tokens: a request's worst case ~0.04
    client = teacher(server, tmp_path, max_cost=0.1, **prices)
    with pytest.raises(BudgetError, match=r"teacher.max_cost=0.1 reached: spent 0.\d+ .*Raise teacher.max_cost"):
        client.chat_many(asks(20, max_tokens=16))
    answered = sum(server.answered.values())
    assert 0 < answered < 20 and client.budget.cost <= 0.1  # what the server answered proves it
    assert answered * 5 * 1000 / 1e6 <= 0.1  # 5 real tokens per answer
    bigger = teacher(server, tmp_path, max_cost=5.0, **prices)
    results = bigger.chat_many(asks(20, max_tokens=16))
    assert all(r.error is None for r in results) and max(server.answered.values()) == 1
    assert sum(server.answered.values()) == 20

    tokens = batch_server()
    capped = teacher(tokens, tmp_path / "t", mode="batch", max_tokens=60)  # room for 2 worst cases at first
    with pytest.raises(BudgetError, match="max_tokens=60 reached"):
        capped.chat_many(asks(20, max_tokens=16))
    assert 0 < sum(tokens.answered.values()) < 20 and tokens.batch_sizes[0] == 2  # submitted only what fits
    assert capped.budget.tokens <= 60
    with pytest.raises(ConfigError, match="max_cost needs the prices"):
        teacher(server, tmp_path / "z", max_cost=1.0)


@pytest.fixture(autouse=True)
def _folders(tmp_path):
    for name in ("x", "y", "t", "z"):
        (tmp_path / name).mkdir(exist_ok=True)
    yield


def test_the_cli_names_the_budget_in_one_line(tmp_path, batch_server):
    server = batch_server()
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.build", "ultrachat", "--run-dir", str(tmp_path / "run"),
         "--set", f"teacher.base_url={server.url}", "--set", "teacher.model=m", "--set", "teacher.max_tokens=300",
         "--set", "n_dialogues=8", "--set", "turns=1", "--set", "min_turns=1"], cwd=ROOT, capture_output=True,
        text=True, timeout=300)
    assert proc.returncode == 2 and "teacher.max_tokens=300 reached" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Raise teacher.max_tokens and rerun" in proc.stderr


def test_a_dry_run_estimates_each_teacher_stage_and_sends_nothing(tmp_path, batch_server):
    server = batch_server()
    run_dir = tmp_path / "run"
    sets = ["--set", f"teacher.base_url={server.url}", "--set", "teacher.model=m", "--set", "teacher.price_in=2",
            "--set", "teacher.price_out=8", "--set", "n_dialogues=4", "--set", "turns=1", "--set", "min_turns=1"]
    build = [sys.executable, "-m", "pipelines.build", "ultrachat", "--run-dir", str(run_dir), *sets]
    dry = subprocess.run([*build, "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr[-2000:]
    rows = [[c.strip() for c in line.strip("| ").split(" | ")] for line in dry.stdout.splitlines()
            if line.startswith("| ") and "---" not in line][1:]
    assert rows and int(rows[0][2].replace(",", "")) > 0 and rows[0][3] == "0"  # requests to send, none cached
    assert float(rows[0][6]) > float(rows[0][7]) > 0  # worst-case cost online, and at the batch price
    assert sum(server.answered.values()) == 0 and server.online == 0  # nothing was sent
    assert not list(run_dir.glob("[0-9][0-9]_*")) and not list(run_dir.glob(".dry-run-*"))  # nothing kept
    subprocess.run(build, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    again = subprocess.run([*build, "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    first = [[c.strip() for c in line.strip("| ").split(" | ")] for line in again.stdout.splitlines()
             if line.startswith(f"| {rows[0][0]} |")]
    assert "every request is cached" in again.stdout or (first and first[0][2] == "0" and first[0][3] != "0")


def test_a_build_in_batch_mode_exports_what_the_online_build_exports(tmp_path, batch_server):
    import polars as pl

    def answer(body: dict) -> str:  # a question for the user simulator, an answer for the assistant; both vary
        system, last = body["messages"][0]["content"], body["messages"][-1]["content"]
        if "only" in system and ("question" in system or "request" in system):
            topic = last.split(":", 1)[-1].strip().splitlines()[0][:80]
            return f"Can you write about {topic} and explain why it matters to people today?"
        return f"The Moon's pull raises the sea on both sides of the Earth, so most coasts see two tides ({len(last)})."

    server = batch_server(answer=answer)
    outputs = {}
    for mode in ("online", "batch"):
        run_dir = tmp_path / mode
        subprocess.run([sys.executable, "-m", "pipelines.build", "ultrachat", "--run-dir", str(run_dir),
                        "--set", f"teacher.base_url={server.url}", "--set", "teacher.model=m",
                        "--set", f"teacher.mode={mode}", "--set", "teacher.batch_poll_s=0.05", "--set", "n_dialogues=4", "--set", "turns=1",
                        "--set", "min_turns=1"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
        stage_rows = {p.parent.name + "/" + p.name: pl.read_parquet(p) for p in run_dir.glob("[0-9][0-9]_*/*.parquet")}
        outputs[mode] = (keys_of(run_dir), stage_rows)
    assert outputs["online"][0] == outputs["batch"][0]  # the same requests, under the same cache keys
    assert outputs["online"][1].keys() == outputs["batch"][1].keys()
    for name, frame in outputs["online"][1].items():
        assert frame.equals(outputs["batch"][1][name]), name  # and the same rows, stage by stage
    answered = [f.height for name, f in outputs["batch"][1].items() if "_opening/part-" in name]
    assert sum(answered) > 0 and server.creates >= 1  # the teacher's openings, answered in batches
