"""End to end on the real embedded teacher: export shape, rerun does nothing, SIGKILL at any point resumes."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time

import polars as pl
import pytest
from datasets import load_dataset
from trl.data_utils import is_conversational

from conftest import ROOT, TINY, build_cmd, report, run_build
from pipelines.stages.export import SPLITS


def cached_requests(run_dir) -> int:
    path = run_dir / "requests.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # table not created yet


def this_run(run_dir) -> dict:
    """What the last invocation sent to the teacher (stage rows hold whole-stage totals across runs)."""
    return json.loads((run_dir / "report.json").read_text())["this_run"]


def export_rows(run_dir) -> pl.DataFrame:
    return pl.read_parquet(run_dir / "export" / "data" / "*.parquet").sort("prompt_id")


@pytest.fixture(scope="module")
def built(tmp_path_factory, teacher_server):
    run_dir = tmp_path_factory.mktemp("build") / "ultrachat"
    first = run_build(run_dir, *TINY, server=teacher_server)
    return run_dir, first


def test_export_loads_with_datasets_and_trl_accepts_every_row(built):
    run_dir, first = built
    files = {s: str(run_dir / "export" / "data" / f"{s}-00000-of-00001.parquet") for s in SPLITS}
    assert report(run_dir)["export"]["rows_out"] >= 4, "too few dialogues to fill every split"
    total = 0
    for split, path in files.items():
        ds = load_dataset("parquet", data_files={split: path})[split]
        assert ds.column_names == ["prompt", "prompt_id", "messages"]
        for row in ds:
            # TRL's is_conversational pops an arbitrary key from a set, so on a row with a string `prompt`
            # (as in ultrachat_200k) its answer depends on PYTHONHASHSEED; SFTTrainer trains on `messages`.
            assert is_conversational({"messages": row["messages"]})
            assert row["messages"][0]["role"] == "user" and row["messages"][-1]["role"] == "assistant"
            assert row["prompt"] == row["messages"][0]["content"]
        total += ds.num_rows
    assert total >= 1, first.stdout
    by_card = load_dataset(str(run_dir / "export"))  # the card's YAML configs name the splits
    assert set(by_card) == set(SPLITS) and sum(d.num_rows for d in by_card.values()) == total
    card = (run_dir / "export" / "README.md").read_text()
    assert "train_sft" in card and "dedup_near" in card and "$" not in card.split("```json")[0]


def test_report_accounts_for_every_row(built):
    run_dir, _ = built
    stages = report(run_dir)
    assert stages["dialogue"]["requests"] > 0 and stages["dialogue"]["tokens_out"] > 0
    for row in stages.values():
        assert row["rows_in"] == row["rows_out"] + sum(row["dropped"].values()), row
    dropped = pl.read_parquet(run_dir / "01_opening" / "dropped.parquet") if stages["opening"]["dropped"] else None
    if dropped is not None:
        assert dropped["drop_reason"].null_count() == 0


def test_rerun_does_no_work(built, teacher_server):
    run_dir, _ = built
    before = export_rows(run_dir)
    cached = cached_requests(run_dir)
    proc = run_build(run_dir, *TINY, server=teacher_server)
    stages = report(run_dir)
    assert {row["status"] for row in stages.values()} == {"skipped"}, proc.stdout
    assert this_run(run_dir)["requests"] == 0 and "this run: requests 0" in proc.stdout
    assert cached_requests(run_dir) == cached
    assert export_rows(run_dir).equals(before)


def test_sigkill_at_several_points_then_resume(tmp_path, teacher_server):
    run_dir = tmp_path / "killed"
    settings = ("n_dialogues=9", "turns=2", "min_turns=1")
    for kill_after in (2, 12):  # answered requests in the cache when the kill lands
        proc = subprocess.Popen(build_cmd(run_dir, *settings, server=teacher_server), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while cached_requests(run_dir) < kill_after and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, "the build finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    answered_before_resume = cached_requests(run_dir)
    run_build(run_dir, *settings, server=teacher_server)
    sent_on_resume = this_run(run_dir)["requests"]
    assert cached_requests(run_dir) == answered_before_resume + sent_on_resume  # nothing answered was sent again
    resumed = export_rows(run_dir)
    assert resumed["prompt_id"].n_unique() == resumed.height  # no row duplicated

    # An uninterrupted run over the same answers (every stage recomputed from the cache) gives the same rows.
    run_build(run_dir, *settings, server=teacher_server, extra=("--fresh",))
    assert this_run(run_dir)["requests"] == 0
    assert this_run(run_dir)["cache_hits"] >= answered_before_resume
    assert export_rows(run_dir).equals(resumed)


def test_killing_the_embedded_server_stops_the_run_and_the_rerun_uses_the_cache(tmp_path):
    """The pipeline starts its own embedded server; it is killed mid-build, restarted once, killed again: the run
    stops with a clear error and leaves no server behind; the rerun sends nothing that was answered before."""
    import psutil

    run_dir = tmp_path / "killed-server"
    small = (*TINY, "teacher.embedded.model=smollm2-135m")  # the recipe's own embedded server, its smallest model
    proc = subprocess.Popen(build_cmd(run_dir, *small), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    servers, deadline = {}, time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        answered = cached_requests(run_dir)
        for child in psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []:
            if child.pid not in servers and "serve" in " ".join(child.cmdline()) and answered >= 3 + 2 * len(servers):
                servers[child.pid] = child
                child.kill()
        time.sleep(0.2)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err[-2000:]
    assert len(servers) == 2 and "restarting it once" in err and "embedded teacher" in err.splitlines()[-1]
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in servers.values())
    answered = cached_requests(run_dir)
    assert answered >= 5

    run_build(run_dir, *small)
    resumed = this_run(run_dir)
    assert cached_requests(run_dir) == answered + resumed["requests"]  # nothing answered was sent again
    assert resumed["cache_hits"] > 0
