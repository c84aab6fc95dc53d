"""Where map stages, near-dedup and teacher stages run: here (`--engine local`, the default: the runner runs every
stage) or on Ray Data (`--engine ray`, the `ray` extra: `ray.py`, with near-dedup's plan of Ray tasks in `near.py`
and teacher stages' workers in `teachers.py`). Same recipes, same checkpoints, same rows out.

An engine is a context manager around a run (it starts what it needs lazily and stops it on exit) with three methods
the runner calls: `check(stages, ctx)` before any stage (one line for what it cannot run), `takes(stage, ctx)`,
whether it runs that stage, and `run(runner, stage, stage_dir, prev_dir, task)`, which writes the stage's parts as
the runner would (`pipelines.core.parts.write_part`); the runner then finishes the stage (`_SUCCESS.json`) as it
finishes its own.
"""

from __future__ import annotations

from pipelines.core.errors import ConfigError

ENGINES = ("local", "ray")


def engine_named(name: str):
    """The engine for `--engine NAME`: None (run everything here) for local, a RayEngine for ray."""
    if name == "local":
        return None
    if name == "ray":
        from pipelines.engines.ray import RayEngine  # Ray itself is imported only when a stage needs it

        return RayEngine()
    raise ConfigError(f"unknown engine {name!r}: expected one of {', '.join(ENGINES)}")
