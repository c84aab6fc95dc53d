"""User-facing errors: each message says what is wrong and what to do. The CLI prints it on one line, exit 2."""

from __future__ import annotations

import errno
import os
import re

from connectors.errors import ConfigError, SourceError  # noqa: F401 (raised from here too)
from connectors.errors import UserError as PipelineError


class TeacherError(PipelineError):
    """The teacher endpoint cannot be reached, started or authenticated."""


class SchemaError(PipelineError):
    """Data does not have the columns or types a stage requires."""


class ResourceError(PipelineError):
    """The machine ran out of something (disk, memory, a file-size limit) or a path cannot be written."""


REMEDIES = {
    errno.ENOSPC: "no space left on the device: free some space, then rerun the same command to resume",
    errno.EDQUOT: "disk quota exceeded: free some space, then rerun the same command to resume",
    errno.EFBIG: "file too large for this system's file-size limit (ulimit -f): raise it, then rerun to resume",
    errno.EROFS: "read-only file system: choose a writable place with --run-dir (or --root)",
    errno.EACCES: "permission denied: make it writable or choose another place with --run-dir (or --root)",
    errno.EPERM: "operation not permitted: make it writable or choose another place with --run-dir (or --root)",
    errno.ENOTDIR: "a path on the way is a file, not a directory: choose another --run-dir (or --root)",
    errno.EEXIST: "a file is in the way where a directory is needed: choose another --run-dir (or --root)",
    errno.EISDIR: "a directory is in the way where a file is needed: move it, or choose another place",
    errno.ELOOP: "too many levels of symbolic links: a link points back to itself",
    errno.ENAMETOOLONG: "the path is too long",
}
_OS_ERROR_TEXT = re.compile(r"\(os error (\d+)\)")


def describe_os_error(exc: BaseException) -> str | None:
    """One line for an operating-system error met while writing (None when `exc` is not one): the path and what to
    do. Libraries that wrap the error (polars: `... (os error 28)`) are recognised by the errno in their text."""
    number = getattr(exc, "errno", None) if isinstance(exc, OSError) else None
    if number is None:
        match = _OS_ERROR_TEXT.search(str(exc))
        if match is None:
            return None
        number = int(match.group(1))
    path = getattr(exc, "filename", None)
    remedy = REMEDIES.get(number) or f"{os.strerror(number)} (errno {number})"
    return f"{path}: {remedy}" if path else remedy
