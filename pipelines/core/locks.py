"""One process at a time per directory: an exclusive, non-blocking `flock` on a lock file inside it.

`build` holds `RUN_DIR/.lock` and `refresh` holds `ROOT/refresh.lock` for as long as they run. A second process on
the same directory gets `Locked` at once; the CLI prints one `busy:` line and exits with `LOCKED` (75,
EX_TEMPFAIL), so a scheduler tries again later. The kernel drops the lock when the holder dies, even by SIGKILL:
no stale lock file ever needs removing. The file holds the holder's pid and start time, for the busy line.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

LOCKED = 75  # EX_TEMPFAIL


class Locked(Exception):
    """Another process holds the lock; the message names it and the lock file."""


class DirLock:
    """`with DirLock(path, "build of dedup"):` holds an exclusive flock on `path` (created if missing)."""

    def __init__(self, path: Path, what: str):
        self.path, self.what = Path(path), what
        self.handle = None

    def __enter__(self) -> "DirLock":
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "unknown process"
            self.handle.close()
            raise Locked(f"another {self.what} is running ({holder}; lock {self.path}); "
                         f"exiting with code {LOCKED}") from None
        self.handle.truncate(0)
        self.handle.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
        self.handle.flush()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.handle.truncate(0)
        except OSError:
            pass  # a full or read-only disk must not hide the error that ended the run
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
