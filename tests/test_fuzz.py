"""Fuzz test of ingest: mutated real files in every container and compression, through the real stage and the CLI.

The generator, the mutations and the oracle live in `bench/fuzz.py` (its docstring explains the oracle); this file
runs a fixed, deterministic sample of its cases. Each test is named by its case id
(`SEED-CONTAINER-COMPRESSION-MUTATION-N`) and reruns alone with

    python bench/fuzz.py --case ID --keep /tmp/fuzz-case      # traceback shown, mutated file kept
    pytest tests/test_fuzz.py -k ID

Cases run in one worker process (`fuzz.Worker`), so a hang (over 20 s) or a crash in native code fails that case
instead of the session. `bench/fuzz.py --cases 5000` runs many more.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_fuzz", ROOT / "bench" / "fuzz.py")
fuzz = importlib.util.module_from_spec(_spec)
sys.modules["bench_fuzz"] = fuzz
_spec.loader.exec_module(fuzz)

# Cases `bench/fuzz.py --cases 5000` found outside the sample below, one per cause, kept as regressions.
FOUND = (
    "sharegpt-arrow-stream-splice-1600",  # a corrupt IPC batch: segfault in to_pylist
    "alpaca_eval-arrow-lz4-flip-1200",  # a corrupt IPC batch: 47 s of allocation, then SystemError
    "alpaca_eval-arrow-stream-splice-973",  # a corrupt IPC batch: SystemError (negative size)
    "sharegpt-arrow-lz4-flip-3677",  # a corrupt IPC file batch (lz4): segfault
    "self_instruct-jsonl-none-mixed_enc-318",  # one UTF-16LE line first: the whole UTF-8 file refused
    "sharegpt-parquet-snappy-flip-1894",  # a column name in the footer not UTF-8: UnicodeDecodeError, no SourceError
)
CASES = fuzz.case_ids(200, seed=0) + list(FOUND)  # about 2 of every (container, mutation) pair, and the above


@pytest.fixture(scope="module")
def worker():
    assert fuzz.REAL.is_dir(), f"{fuzz.REAL} is missing: CI runs with ../shared beside the repository"
    w = fuzz.Worker(timeout=20)
    yield w
    w.close()


@pytest.mark.parametrize("case_id", CASES)
def test_ingest_accounts_for_every_record_of_a_mutated_file(case_id, worker):
    result = worker.run(case_id)
    assert result["ok"], fuzz.describe(result)


def _write_cases(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, case_id in enumerate(fuzz.e2e_case_ids()):
        case = fuzz.Case.parse(case_id)
        path = folder / f"{n:02d}_{case.filename}"
        path.write_bytes(fuzz.build(case).file)
        paths.append(path)
    return paths


def _build_ingest(sources: Path, run_dir: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipelines.build", "ingest", "--set", f"sources={sources}", "--run-dir", str(run_dir)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


def _check_run(proc: subprocess.CompletedProcess, run_dir: Path, files: list[Path], tmp_path: Path) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    quarantined = pl.read_parquet(run_dir / "quarantine.parquet").height
    exported = sum(pl.read_parquet(p).height for p in (run_dir / "export").rglob("*.parquet"))
    stages = json.loads((run_dir / "report.json").read_text())["stages"]
    ingest = next(s for s in stages if s["stage"].endswith("_ingest"))
    # What the stage counts for each file on its own, in-process: every file once.
    counted = sum(f.height for path in files for f in fuzz.ingest(path, tmp_path / "count" / path.name))
    assert ingest["rows_in"] == counted, f"ingest read {ingest['rows_in']} rows; read once, the files hold {counted}"
    assert quarantined + exported == counted, f"quarantine {quarantined} + export {exported} != ingested {counted}"


def test_cli_ingests_a_directory_of_mutated_files(tmp_path):
    files = _write_cases(tmp_path / "src")
    proc = _build_ingest(tmp_path / "src", tmp_path / "run")
    _check_run(proc, tmp_path / "run", files, tmp_path)


def test_cli_reads_each_file_once_under_a_symlink_cycle(tmp_path):
    """A directory that links back to its parent (`src/data/loop -> ..`): the walk ends, each file is read once."""
    files = _write_cases(tmp_path / "src" / "data")[:4]
    for extra in sorted((tmp_path / "src" / "data").iterdir())[4:]:
        extra.unlink()
    (tmp_path / "src" / "data" / "loop").symlink_to("..", target_is_directory=True)
    proc = _build_ingest(tmp_path / "src", tmp_path / "run")
    _check_run(proc, tmp_path / "run", files, tmp_path)
