"""The sandboxed side of a tool call: run as a script (`python -I worker.py TOOLS_FILE WORKDIR LIMITS_JSON`) by
`pipelines.tools.sandbox`, never imported by the pipeline.

Standard library only, so the child loads nothing but the tools file. Before that file is imported it:
- sets resource limits: address space, CPU seconds, the size of files it writes, open files, no child processes;
- moves the protocol to a private copy of stdout and points fds 1 and 2 at /dev/null, so a tool's prints (even
  `os.write(1, ...)`) cannot corrupt it; `print` inside a call goes to a capped buffer;
- installs an audit hook (`sys.addaudithook`, which nothing can remove) that refuses sockets, subprocesses,
  `os.system`, forks, signals to others, `ctypes`, writes outside WORKDIR and reads outside the allowed roots.
Then, per line on stdin (`{"name", "arguments"}`, arguments already validated against the schema by the parent),
it calls the function and answers one line: `{"status": "ok", "result": ...}` or `{"status": "execution_error",
"error": "ValueError: ..."}` or `output_too_large`. The first line it writes is `{"ready": [names], "tools": [...]}`
(or `{"import_error": ...}`).
"""

import builtins
import importlib.util
import io
import json
import os
import resource
import sys
import time
import traceback


class Refused(PermissionError):
    pass


def set_limits(limits: dict) -> None:
    memory = limits["memory_mb"] * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_seconds"], limits["cpu_seconds"] + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_mb"] * 2**20,) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
REFUSED_EVENTS = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                  "os.forkpty", "os.kill", "os.killpg", "os.startfile", "pty.", "ctypes.", "winreg.", "shutil.rmtree",
                  "os.chroot", "os.setuid", "webbrowser.", "urllib.Request", "ftplib.", "smtplib.", "http.client.")
PATH_EVENTS = {"os.remove", "os.rename", "os.replace", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link",
               "os.symlink", "os.truncate", "os.utime", "shutil.copyfile", "shutil.move", "shutil.copytree"}


def install_guard(workdir: str, read_roots: list[str]) -> None:
    workdir = os.path.realpath(workdir)
    roots = [os.path.realpath(r) for r in read_roots] + [workdir]

    def inside(path, places) -> bool:
        if isinstance(path, int):
            return True  # an fd already open: only the guarded fds exist
        real = os.path.realpath(os.fsdecode(path))
        return any(real == p or real.startswith(p.rstrip("/") + "/") for p in places)

    def hook(event, args):
        if event.startswith(REFUSED_EVENTS):
            raise Refused(f"the tool sandbox refuses {event}")
        if event == "open":
            path, mode, flags = args
            if path is None:
                return
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & WRITE_FLAGS
            if writes and not inside(path, [workdir]):
                raise Refused(f"the tool sandbox refuses writing {path} (outside its working directory)")
            if not writes and not inside(path, roots):
                raise Refused(f"the tool sandbox refuses reading {path}")
        elif event in PATH_EVENTS:
            for path in args[:2]:
                if isinstance(path, (str, bytes, os.PathLike)) and not inside(path, [workdir]):
                    raise Refused(f"the tool sandbox refuses {event} on {path}")

    sys.addaudithook(hook)


class CappedText(io.TextIOBase):
    """A stdout that keeps the first `cap` characters and drops the rest."""

    def __init__(self, cap: int):
        self.cap, self.parts, self.size = cap, [], 0

    def write(self, text):
        if self.size < self.cap:
            self.parts.append(text[: self.cap - self.size])
        self.size += len(text)
        return len(text)


def answer(out, value: dict) -> None:
    out.write(json.dumps(value, ensure_ascii=False) + "\n")
    out.flush()


def call(module, request: dict, max_output: int) -> dict:
    function = getattr(module, request["name"], None)
    if not callable(function):
        return {"status": "unknown_tool", "error": f"the tools file has no function {request['name']!r}"}
    sys.stdout = sys.stderr = printed = CappedText(max_output)
    try:
        result = function(**request["arguments"])
        text = json.dumps(result, ensure_ascii=False, allow_nan=False, default=str)
    except MemoryError:
        return {"status": "execution_error", "error": "MemoryError: the call ran out of its memory limit"}
    except RecursionError:
        return {"status": "execution_error", "error": "RecursionError: maximum recursion depth exceeded"}
    except Exception as exc:  # the tool's own error is the outcome, reported whole
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return {"status": "execution_error", "error": f"{type(exc).__name__}: {str(exc)[:500]} "
                                                      f"({os.path.basename(where.filename)}:{where.lineno})"}
    finally:
        sys.stdout = sys.stderr = io.StringIO()
    if len(text) > max_output:
        return {"status": "output_too_large", "error": f"the result is {len(text):,} characters; the limit is "
                                                       f"{max_output:,}"}
    return {"status": "ok", "result": json.loads(text), "printed": "".join(printed.parts)[:2000]}


def main() -> None:
    tools_file, workdir, limits = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.chdir(workdir)
    set_limits(limits)
    roots = [os.path.dirname(os.path.realpath(tools_file)), sys.prefix, sys.base_prefix, sys.exec_prefix,
             "/usr/share/zoneinfo", "/etc/localtime", os.devnull, *limits.get("read_roots", [])]
    install_guard(workdir, roots)
    builtins.input = None  # stdin carries the protocol
    try:
        spec = importlib.util.spec_from_file_location("tools_module", tools_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        tools = [dict(t) for t in getattr(module, "TOOLS", [])]
        json.dumps(tools)
    except BaseException as exc:  # noqa: BLE001 - an import that fails in any way is reported, not raised
        answer(out, {"import_error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        return
    implemented = [t.get("function", {}).get("name") for t in tools
                   if callable(getattr(module, str(t.get("function", {}).get("name")), None))]
    answer(out, {"ready": implemented, "tools": tools})
    for line in sys.stdin:
        request = json.loads(line)
        started = time.perf_counter()
        outcome = call(module, request, limits["max_output"])
        answer(out, {**outcome, "seconds": round(time.perf_counter() - started, 6)})


if __name__ == "__main__":
    main()
