"""A run that a neighbour, the machine or the filesystem works against: two builds on one run dir, a full disk, a
read-only or unwritable place, a file where the run dir should be, checkpoints damaged after they were written.
Each ends in a run that is either right or stopped with one `error:`/`busy:` line, and a rerun resumes.

(Hostile *inputs* are in test_hostile_ingest.py and test_fuzz.py, hostile settings in test_config_ranges.py.)
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from pipelines.core.locks import LOCKED

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("river stone cloud lamp orbit maple violet thunder quiet harbor copper meadow silver lantern forest "
         "signal canyon ember glacier willow").split()
AS_ROOT = os.geteuid() == 0


def write_corpus(path: Path, n: int, seed: int = 0, duplicates: int = 0) -> Path:
    """`n` OpenAI-messages records of random words, then `duplicates` exact copies of the first ones."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        user = " ".join(rng.choice(WORDS) for _ in range(25))
        answer = " ".join(rng.choice(WORDS) for _ in range(50))
        lines.append(json.dumps({"messages": [{"role": "user", "content": user},
                                              {"role": "assistant", "content": answer}]}))
    path.write_text("\n".join(lines + lines[:duplicates]) + "\n")
    return path


def build(run_dir: Path, corpus: Path, *extra: str, preexec=None, prefix=(), recipe="dedup") -> subprocess.Popen:
    cmd = [*prefix, sys.executable, "-m", "pipelines.build", recipe, "--set", f"sources={corpus}",
           "--run-dir", str(run_dir), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=preexec, env={**os.environ, "COLUMNS": "200"})


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=600)
    return proc.returncode, err


def one_error_line(err: str, prefix: str = "error: ") -> str:
    """The run's stderr ends in exactly one error line, with no traceback and no blank line before it."""
    assert "Traceback" not in err, err[-3000:]
    lines = err.rstrip("\n").split("\n")
    assert lines[-1].startswith(prefix), err[-2000:]
    assert sum(line.startswith(prefix) for line in lines) == 1, err[-2000:]
    assert len(lines) == 1 or lines[-2].strip(), f"blank line before the error: {err[-500:]!r}"
    return lines[-1]


def exported(run_dir: Path) -> pl.DataFrame:
    return pl.read_parquet(run_dir / "export" / "data" / "*.parquet").sort("id")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "chats.jsonl", 20_000, duplicates=500)


@pytest.fixture(scope="module")
def solo(corpus, tmp_path_factory) -> pl.DataFrame:
    """The export of one build with the machine to itself: what every other run must end with."""
    run = tmp_path_factory.mktemp("solo") / "run"
    code, err = finish(build(run, corpus))
    assert code == 0, err[-3000:]
    return exported(run)


def wait_for_lock(run_dir: Path, proc: subprocess.Popen) -> None:
    lock = run_dir / ".lock"
    deadline = time.monotonic() + 120
    while not (lock.exists() and f"pid {proc.pid}," in lock.read_text()):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the build never took its lock"
        time.sleep(0.05)


def test_a_second_build_on_the_same_run_dir_exits_busy_and_the_first_is_whole(corpus, solo, tmp_path):
    run = tmp_path / "run"
    first = build(run, corpus)
    wait_for_lock(run, first)
    code, err = finish(build(run, corpus))
    assert code == LOCKED == 75
    line = one_error_line(err, "busy: ")
    assert f"pid {first.pid}" in line and str(run / ".lock") in line
    assert first.poll() is None, "the second build should not have had to wait for the first"
    code, err = finish(first)
    assert code == 0, err[-3000:]
    assert exported(run).equals(solo)
    assert pl.read_parquet(run / "quarantine.parquet").height == 500  # the planted copies, none lost


def test_a_killed_holder_frees_the_lock_and_the_rerun_resumes(corpus, solo, tmp_path):
    run = tmp_path / "run"
    first = build(run, corpus)
    wait_for_lock(run, first)
    time.sleep(2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    code, err = finish(build(run, corpus))
    assert code == 0, err[-3000:]
    assert exported(run).equals(solo)


def fill_disk_then_free(tmp_path: Path, corpus: Path, solo: pl.DataFrame, limit, free) -> str:
    run = tmp_path / "disk" / "run"
    code, err = finish(build(run, corpus, **limit))
    assert code == 2
    line = one_error_line(err)
    free()
    code, again = finish(build(run, corpus))
    assert code == 0, again[-3000:]
    assert exported(run).equals(solo)
    return line


@pytest.mark.skipif(not AS_ROOT, reason="mounting a size-limited tmpfs needs root; the rlimit test covers the rest")
def test_a_full_disk_is_one_line_and_the_rerun_resumes(corpus, solo, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], check=True)
    try:
        line = fill_disk_then_free(tmp_path, corpus, solo, {}, lambda: subprocess.run(
            ["mount", "-o", "remount,size=512m", str(disk)], check=True))
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    assert "no space left on the device" in line and str(disk / "run") in line and "rerun" in line


def test_a_file_size_limit_is_one_line_and_the_rerun_resumes(corpus, solo, tmp_path):
    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))

    line = fill_disk_then_free(tmp_path, corpus, solo, {"preexec": small_files}, lambda: None)
    assert "file too large" in line and "ulimit -f" in line


def test_a_run_dir_that_is_a_file_is_one_line(corpus, tmp_path):
    (tmp_path / "taken").write_text("not a directory")
    code, err = finish(build(tmp_path / "taken", corpus))
    assert code == 2
    assert "is a file, not a directory" in one_error_line(err)
    code, err = finish(build(tmp_path / "taken" / "below", corpus))
    assert code == 2
    assert str(tmp_path / "taken") in one_error_line(err)


@pytest.mark.skipif(not AS_ROOT, reason="mounting a read-only filesystem needs root")
def test_a_read_only_filesystem_is_one_line(corpus, tmp_path):
    place = tmp_path / "ro"
    place.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(place)], check=True)
    try:
        code, err = finish(build(place / "run", corpus))
    finally:
        subprocess.run(["umount", "-l", str(place)], check=False)
    assert code == 2
    line = one_error_line(err)
    assert "read-only file system" in line and str(place / "run") in line


def test_a_directory_without_write_permission_is_one_line(corpus, tmp_path):
    place = tmp_path / "locked"
    place.mkdir()
    place.chmod(0o555)
    # root writes anywhere: take away the capabilities that let it, so the mode bits count as for anyone
    prefix = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
              "--bounding-set=-dac_override,-dac_read_search", "--"] if AS_ROOT else []
    code, err = finish(build(place / "run", corpus, prefix=prefix))
    assert code == 2
    line = one_error_line(err)
    assert "permission denied" in line and str(place / "run") in line


def test_a_damaged_checkpoint_is_recomputed_not_trusted(corpus, solo, tmp_path):
    run = tmp_path / "run"
    code, err = finish(build(run, corpus))
    assert code == 0, err[-3000:]
    parts = sorted((run / "00_ingest").glob("part-*.parquet"))
    parts[0].write_bytes(parts[0].read_bytes()[: parts[0].stat().st_size // 2])  # cut in half after it was done
    (run / "01_dedup_exact" / "part-00000.parquet").write_bytes(b"PAR1 not parquet")
    code, err = finish(build(run, corpus))
    assert code == 0, err[-3000:]
    assert "00_ingest: resumed" in err and "01_dedup_exact: ran" in err
    assert exported(run).equals(solo)


def test_rows_dropped_after_ingest_keep_the_input_file_and_line(tmp_path):
    corpus = write_corpus(tmp_path / "chats.jsonl", 30, duplicates=3)
    code, err = finish(build(tmp_path / "run", corpus))
    assert code == 0, err[-3000:]
    quarantine = pl.read_parquet(tmp_path / "run" / "quarantine.parquet")
    assert quarantine.filter(pl.col("stage") == "01_dedup_exact")["locator"].to_list() == [
        "chats.jsonl:31", "chats.jsonl:32", "chats.jsonl:33"]
    raw = json.loads(quarantine["raw"][0])
    assert raw["meta"] == {"locator": "chats.jsonl:31"}  # an object, not JSON text inside JSON


def test_os_errors_are_recognised_also_when_a_library_wraps_them():
    from pipelines.core.errors import describe_os_error

    assert describe_os_error(OSError(28, "No space left on device")).startswith("no space left on the device")
    assert describe_os_error(RuntimeError("failed to write: No space left on device (os error 28)")) \
        .startswith("no space left on the device")
    assert describe_os_error(RuntimeError("plain bug")) is None
    assert describe_os_error(PermissionError(13, "denied", "/x/y")).startswith("/x/y: permission denied")



def test_a_run_on_a_dedup_index_another_run_is_extending_exits_busy(tmp_path):
    from pipelines.core.locks import DirLock

    corpus = write_corpus(tmp_path / "chats.jsonl", 40)
    index = tmp_path / "index"
    index.mkdir()
    with DirLock(index / ".lock", "test holding the index"):
        code, err = finish(build(tmp_path / "run", corpus, "--set", f"index={index}"))
    assert code == LOCKED
    assert str(index / ".lock") in one_error_line(err, "busy: ")
    code, err = finish(build(tmp_path / "run", corpus, "--set", f"index={index}"))  # resumes once it is free
    assert code == 0, err[-3000:]
    assert "00_ingest: skipped" in err and json.loads((index / "manifest.json").read_text())["shards"][0]["rows"] == 40


SECRETS = {  # the part of each that must never be written, as it appears in the input
    "openai_key": "sk-proj-" + "Zq3" * 10,
    "anthropic_key": "sk-ant-api03-" + "a1B2" * 10,
    "aws_key": "AKIAIOSFODNN7EXAMPLE",
    "github_token": "ghp_" + "x7" * 18,
    "google_key": "AIza" + "S" * 35,
    "slack_token": "xoxb-123456789012-abcdefABCDEF",
    "hf_token": "hf_" + "q" * 34,
    "stripe_key": "sk_live_" + "4" * 24,
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "private_key": "MIIEpAIBAAKCAQEAsecretkeybody",
    "bearer_token": "Tk9UX0FfUkVBTF9UT0tFTl9BVF9BTEw",
    "email": "jane.doe@example.org",
    "phone": "+44 20 7946 0958",
    "ip_address": "203.0.113.77",
}


def planted(name: str, value: str) -> str:
    if name == "private_key":
        return f"-----BEGIN RSA PRIVATE KEY-----\n{value}\n-----END RSA PRIVATE KEY-----"
    return f"Bearer {value}" if name == "bearer_token" else value


def test_with_redaction_on_no_secret_is_written_anywhere_in_the_run_dir(tmp_path):
    """Secrets of every redacted kind in kept rows, in fields kept in `meta`, in exact duplicates and in records
    that are quarantined (bad JSON, a bad role, a bad format): none of them reaches a file of the run dir."""
    def chat(text: str, **extra) -> str:
        return json.dumps({"messages": [{"role": "user", "content": text},
                                        {"role": "assistant", "content": "Noted, thank you."}], **extra})

    lines = []
    for name, value in SECRETS.items():
        secret = planted(name, value)
        lines += [chat(f"my {name} is {secret}, keep it safe"), chat(f"hello {name}", note=f"from {secret}"),
                  f'{{"messages": [{{"role": "user", "content": "{secret.replace(chr(10), " ")} and then',
                  json.dumps({"messages": [{"role": "wizard", "content": f"cast {secret}"}]})]
    lines += lines[:4]  # exact duplicates, dropped after ingest
    corpus = tmp_path / "log.jsonl"
    corpus.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    code, err = finish(build(run, corpus, "--set", "redact=chat_logs"))
    assert code == 0, err[-3000:]
    quarantine = pl.read_parquet(run / "quarantine.parquet")
    assert quarantine.height == 2 * len(SECRETS) + 4  # the bad JSON and bad role lines, twice for the first

    leaks = []
    for path in [p for p in run.rglob("*") if p.is_file()]:
        texts = [path.read_bytes().decode("utf-8", "replace")]
        if path.suffix == ".parquet":  # compressed pages hide text from a byte search: decode every column
            texts.append(pl.read_parquet(path).write_ndjson())
        leaks += [(path.relative_to(run), name) for name, value in SECRETS.items() if any(value in t for t in texts)]
    assert leaks == []
    assert "<SECRET_OPENAI_KEY>" in quarantine.filter(pl.col("stage") == "00_ingest")["raw"].str.join("")[0]


def test_a_part_holding_invalid_utf8_is_never_written(tmp_path):
    """Invalid UTF-8 that reached a frame (pyarrow's JSON reader copies bytes as they are) stops the stage before the
    part exists, so it can never be marked done and break the next stage."""
    import numpy as np
    import pyarrow as pa

    from pipelines.core.errors import PipelineError
    from pipelines.core.parts import write_atomic

    content = pa.Array.from_buffers(pa.string(), 2, [None, pa.py_buffer(np.array([0, 2, 4], np.int32)),
                                                     pa.py_buffer(b"ok\xff\xfe")])
    messages = pa.ListArray.from_arrays(pa.array([0, 1, 2], pa.int32()),
                                        pa.StructArray.from_arrays([content, content], names=["role", "content"]))
    frame = pl.from_arrow(pa.table({"messages": messages}))
    with pytest.raises(PipelineError, match="invalid data"):
        write_atomic(frame, tmp_path / "part-00000.parquet")
    assert list(tmp_path.iterdir()) == []
