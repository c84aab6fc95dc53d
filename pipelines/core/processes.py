"""Child processes that do not outlive the process that started them: `preexec_fn=die_with_parent`.

Used wherever the pipeline starts a long-lived child: the embedded teacher server (`pipelines.teacher.server`), an
experiment's steps (`pipelines.experiment.steps`) and the GGUF export's converter (`pipelines.train.export`).
"""

from __future__ import annotations

import ctypes
import signal


def die_with_parent() -> None:
    """`preexec_fn` of a child process: ask Linux to SIGKILL it when the process that started it dies, even by
    SIGKILL, so no orphan goes on writing where a rerun works. Not SIGTERM: uvicorn takes that as a graceful shutdown
    and goes on serving the requests in flight, for minutes on a busy CPU (seen)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
