"""CLI errors: one line naming what is wrong and what to do, exit 2, no traceback unless --debug."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT, run_build
from pipelines.teacher.server import free_port


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pipelines.build", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr  # progress lines may come before it
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_unknown_config_key_lists_valid_keys(tmp_path):
    assert_one_line_error(cli("ultrachat", "--run-dir", str(tmp_path), "--set", "n_dialogs=3"),
                          "n_dialogs", "n_dialogues", "teacher.base_url")


def test_badly_typed_value(tmp_path):
    assert_one_line_error(cli("ultrachat", "--run-dir", str(tmp_path), "--set", "turns=many"), "turns", "int")


def test_unknown_flag_and_recipe(tmp_path):
    assert_one_line_error(cli("ultrachat", "--frsh"), "--frsh")
    assert_one_line_error(cli("nosuchrecipe"), "nosuchrecipe", "ultrachat")


def test_missing_source_file(tmp_path):
    missing = tmp_path / "nope.txt"
    assert_one_line_error(cli("ultrachat", "--run-dir", str(tmp_path / "r"), "--set", f"sources={missing}"),
                          str(missing), "sources")


def test_unreachable_teacher_stops_with_teacher_error(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    proc = cli("ultrachat", "--run-dir", str(tmp_path), "--set", f"teacher.base_url={url}",
               "--set", "teacher.max_retries=0", "--limit", "2")
    assert_one_line_error(proc, url, "did not answer")


def test_embedded_teacher_that_cannot_start(tmp_path):
    from pipelines.teacher.llama import candidates

    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"not a model" * 100)
    proc = cli("ultrachat", "--run-dir", str(tmp_path / "r"), "--limit", "1", "--set",
               f"teacher.embedded.model={broken}", env={"PIPELINES_LLAMA_SERVER": str(candidates(fetch=False)[0])})
    assert_one_line_error(proc, "embedded teacher exited with code", "server.log")
    assert (tmp_path / "r" / "server.log").exists()


def test_debug_shows_the_traceback(tmp_path):
    proc = cli("ultrachat", "--run-dir", str(tmp_path), "--set", "nope=1", "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_show_config_prints_keys():
    proc = cli("ultrachat", "--show-config", "--set", "turns=4")
    assert proc.returncode == 0 and '"turns": 4' in proc.stdout and "teacher.max_concurrency" in proc.stdout


def test_embedded_default_end_to_end_leaves_no_server_behind(tmp_path):
    """The build starts its own embedded server (no base_url), finishes, and stops it."""
    run_dir = tmp_path / "embedded"
    before = servers()
    proc = run_build(run_dir, "n_dialogues=3", "turns=1", "min_turns=1")
    assert "export:" in proc.stdout
    assert (run_dir / "export" / "README.md").exists() and (run_dir / "server.log").stat().st_size > 0
    assert servers() == before
    assert "starting embedded Qwen2.5-Coder-1.5B-Instruct-Q4_K_M on llama-server" in proc.stderr


def servers() -> int:
    ps = subprocess.run(["ps", "-eo", "args", "--cols", "100000"], capture_output=True, text=True).stdout
    return sum("transformers.cli.transformers serve" in line or ("llama-server" in line and "--alias" in line)
               for line in ps.splitlines())


def test_sigterm_mid_build_stops_the_embedded_server(tmp_path):
    import signal
    import time

    from conftest import build_cmd

    run_dir = tmp_path / "term"
    before = servers()
    proc = subprocess.Popen(build_cmd(run_dir, "n_dialogues=60"), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while servers() == before and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert servers() == before + 1, "the embedded server never started"
    log = run_dir / "server.log"  # SIGTERM once it serves (a signal while it is still loading: see issue 16's note)
    while "listening" not in (log.read_text(errors="replace") if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr.read()
    assert servers() == before
