"""Shared fixtures. One real embedded teacher (SmolLM2-135M on llama-server) serves the whole session."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# `datasets` caches a local dataset directory by its path and serves the cached rows even after the files were
# rewritten (seen with datasets 5.2), and pytest reuses tmp paths across sessions: keep its cache per session.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="hf-datasets-")

import pytest

from pipelines.teacher.server import EmbeddedServer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def teacher_server(tmp_path_factory):
    server = EmbeddedServer(tmp_path_factory.mktemp("server") / "server.log", log=lambda m: None).start()
    yield server
    server.stop()


def build_cmd(run_dir: Path, *overrides: str, server=None, extra=(), recipe="ultrachat") -> list[str]:
    cmd = [sys.executable, "-m", "pipelines.build", recipe, "--run-dir", str(run_dir), *extra]
    if server is not None:
        overrides = (f"teacher.base_url={server.base_url}", f"teacher.model={server.model}", *overrides)
    for item in overrides:
        cmd += ["--set", item]
    return cmd


def run_build(run_dir: Path, *overrides: str, server=None, extra=(), check=True, recipe="ultrachat",
              env=None) -> subprocess.CompletedProcess:
    """`python -m pipelines.build RECIPE` on `run_dir`, the teacher pointed at `server` when given."""
    proc = subprocess.run(build_cmd(run_dir, *overrides, server=server, extra=extra, recipe=recipe), cwd=ROOT,
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def kill_after_first_part(cmd: list[str], stage_dir: Path, timeout: float = 180) -> list[Path]:
    """Start a build, SIGKILL it once `stage_dir` has a finished part; the parts it left."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not list(stage_dir.glob("part-*.parquet")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    parts = sorted(stage_dir.glob("part-*.parquet"))
    assert parts, f"the build was killed before the first part of {stage_dir.name}"
    return parts


@contextmanager
def error_endpoint(status_of, message: str):
    """A loopback HTTP server answering every POST with `{"error": {"message": message}}` under the status
    `status_of(path)` gives; yields its `/v1` base URL. Only for faults a real server cannot be made to give."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            data = json.dumps({"error": {"message": message}}).encode()
            self.send_response(status_of(self.path))
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()


def report(run_dir: Path) -> dict:
    data = json.loads((run_dir / "report.json").read_text())
    return {row["stage"].split("_", 1)[1]: row for row in data["stages"]}


TINY = ("n_dialogues=9", "turns=2", "min_turns=1")  # enough rows to fill all four splits


@pytest.fixture
def serve():
    """`serve(server)` runs a loopback HTTP server in a thread for the test and shuts it down after."""
    servers = []

    def start(server):
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
