"""Run tool calls in a separate, limited process: one worker per tools file and batch of calls.

The worker (`worker.py`, started with `python -I`, inside `unshare --user --net` where the kernel allows it, so it
has no network interface at all) holds the limits below; this side enforces the wall clock: a call that does not
answer in `timeout` seconds is a `timeout`, its worker is killed (its whole process group) and a fresh one serves the
rest of the batch. A worker that dies (CPU limit, a crash) makes that call `killed`. Calls beyond `max_calls` in one
batch are `over_call_cap` and never run. Arguments reach the worker only after `validate.check_arguments`: data
checked against the tool's JSON Schema, never code.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipelines.core.errors import ConfigError

WORKER = Path(__file__).with_name("worker.py")
TIMED_OUT, DIED = "timed out", "died"  # what `_read` returns instead of a line


@dataclass
class Limits:
    timeout: float = 5.0  # wall-clock seconds per call
    cpu_seconds: int = 30  # CPU seconds per worker (a batch; a fresh worker after a timeout)
    memory_mb: int = 1024  # address space of the worker
    file_mb: int = 16  # the largest file a tool may write (in its working directory only)
    max_output: int = 65_536  # characters of a call's JSON result
    max_calls: int = 64  # calls per batch (a model's turn); the rest are refused, not run
    read_roots: list[str] = field(default_factory=list)  # more places a tool may read (its data)


@dataclass
class Outcome:
    status: str  # ok | execution_error | timeout | killed | output_too_large | unknown_tool | over_call_cap
    result: object = None
    error: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def can_unshare() -> bool:
    """Whether `unshare --user --net` runs here (user namespaces allowed), checked once per process."""
    global _UNSHARE
    if _UNSHARE is None:
        tool = shutil.which("unshare")
        _UNSHARE = bool(tool) and subprocess.run([tool, "--user", "--net", "true"], capture_output=True,
                                                 timeout=10).returncode == 0
    return _UNSHARE


_UNSHARE = None


class Sandbox:
    """`with Sandbox(tools_file) as box: box.run([("add", {"a": 1, "b": 2})])` -> [Outcome]."""

    def __init__(self, tools_file: str | Path, limits: Limits | None = None):
        self.tools_file = Path(tools_file).resolve()
        if not self.tools_file.is_file():
            raise ConfigError(f"tools file {tools_file} does not exist")
        self.limits = limits or Limits()
        self.workdir = Path(tempfile.mkdtemp(prefix="tool-sandbox-"))
        self.process = None
        self.implemented: list[str] = []
        self.tools: list[dict] = []
        self.started = 0  # workers started, for the tests and the report

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self) -> None:
        command = [sys.executable, "-I", str(WORKER), str(self.tools_file), str(self.workdir),
                   json.dumps(asdict(self.limits))]
        if can_unshare():
            command = ["unshare", "--user", "--net", *command]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, cwd=self.workdir, start_new_session=True,
                                        text=True, encoding="utf-8")
        self.started += 1
        hello = self._read(max(self.limits.timeout, 30.0))
        if not isinstance(hello, dict) or "import_error" in hello:
            self.close()
            why = hello["import_error"] if isinstance(hello, dict) else "the worker did not start"
            raise ConfigError(f"tools file {self.tools_file} failed to import: {why}")
        self.implemented, self.tools = hello["ready"], hello["tools"]

    def _read(self, timeout: float) -> dict | str:
        """The worker's next line; TIMED_OUT when it did not answer in time, DIED when its output ended."""
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            return TIMED_OUT
        line = self.process.stdout.readline()
        return json.loads(line) if line else DIED

    def _kill(self) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
            self.process = None

    def close(self) -> None:
        self._kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def describe(self) -> list[dict]:
        """The tools file's `TOOLS` (OpenAI function definitions), read inside the sandbox."""
        if self.process is None:
            self.start()
        return self.tools

    def run(self, calls: list[tuple[str, dict]]) -> list[Outcome]:
        """Each (name, validated arguments) call's outcome, in order."""
        outcomes = []
        for index, (name, arguments) in enumerate(calls):
            if index >= self.limits.max_calls:
                outcomes.append(Outcome("over_call_cap", error=f"more than {self.limits.max_calls} calls in one "
                                                               "turn; the rest were not run"))
                continue
            if self.process is None:
                self.start()
            started = time.perf_counter()
            try:
                self.process.stdin.write(json.dumps({"name": name, "arguments": arguments}) + "\n")
                self.process.stdin.flush()
                reply = self._read(self.limits.timeout)
            except (BrokenPipeError, OSError, ValueError):
                reply = DIED
            seconds = time.perf_counter() - started
            if not isinstance(reply, dict):
                self._kill()
                outcomes.append(Outcome("timeout", error=f"no answer in {self.limits.timeout:g} s", seconds=seconds)
                                if reply == TIMED_OUT else
                                Outcome("killed", error="the tool's process died (CPU or memory limit, or a crash)",
                                        seconds=seconds))
                continue
            outcomes.append(Outcome(reply["status"], reply.get("result"), reply.get("error", ""), seconds))
        return outcomes
