"""One shared rich progress display: the runner shows a bar per stage, the teacher one per batch of requests.

Outside `live()` the calls still work but draw nothing, so library use stays quiet.
"""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)
_progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                     console=console, transient=True)


@contextmanager
def live():
    """Draw the bars while the block runs, on a terminal only (elsewhere rich would print a blank line on exit,
    between the log and an `error:` line)."""
    if not console.is_terminal:
        yield
        return
    with _progress:
        yield


def add(description: str, total: int | None) -> int:
    return _progress.add_task(description, total=total)


def advance(task: int, n: int = 1) -> None:
    _progress.advance(task, n)


def remove(task: int) -> None:
    _progress.remove_task(task)


def counted(frames, task: int):
    """Pass frames through, advancing `task` by their rows."""
    for frame in frames:
        yield frame
        advance(task, frame.height)
