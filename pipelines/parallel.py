"""CPU work on several cores: `ordered_map(fn, tasks)` runs `fn` over tasks in worker processes.

Results come back in task order, and at most `ahead` tasks per worker are submitted before their results are taken,
so a stream of tasks (chunks of a multi-GB file) is never held in memory whole. Workers are spawned (fresh
interpreters): a fork would copy polars' and pyarrow's thread pools without their threads and hang. So `fn` must be
importable by name, and `warm_up` (if given) runs once in each worker before its first task. Each task and result
is pickled: send bytes or Arrow tables, not object graphs. With one worker (or one core) it runs in this process.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def ordered_map(fn: Callable[[T], R], tasks: Iterable[T], workers: int = 0, ahead: int = 2,
                warm_up: Callable[[], None] | None = None) -> Iterator[R]:
    workers = workers or cores()
    if workers <= 1:
        yield from map(fn, tasks)
        return
    with multiprocessing.get_context("spawn").Pool(workers, initializer=warm_up) as pool:
        pending: deque = deque()
        for task in tasks:
            pending.append(pool.apply_async(fn, (task,)))
            if len(pending) >= workers * ahead:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
