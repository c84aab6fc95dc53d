"""Evaluation suites. A suite is a module with `NAME`, `DEFAULT_LIMIT`, `ABOUT` (one line for the report),
`items(limit, options)` (its items, in a fixed order; `options` holds the command's suite options, such as
`prefs_export`), `prompt_of(item)` (the text the model is asked, which is decontaminated against its training
data) and `run(items, ctx)` (one row per item: what was asked, what each model
answered, and `score` in [0, 1] for MODEL, plus `baseline_score` when the suite scores the baseline on its own);
optionally `summary(rows)` for numbers beyond the mean score."""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from importlib import resources
from typing import Callable

from pipelines.core.errors import ConfigError
from pipelines.dedup.decontam import SUITES as SHIPPED

SUITES = ("gsm8k", "judged", "prefs")


@dataclass
class SuiteContext:
    """What a suite asks through: `generate(model, requests, desc)` and `judge(requests, desc)` return the teacher
    client's results in order (cached, retried, resumable); `baseline` is None without `--baseline`."""

    model: object
    baseline: object | None
    generate: Callable
    judge: Callable | None


def load_suite(name: str):
    if name not in SUITES:
        raise ConfigError(f"suite {name!r}: choose among {', '.join(SUITES)}")
    return importlib.import_module(f"pipelines.eval.suites.{name}")


def shipped(name: str, limit: int | None) -> list[dict]:
    """The first `limit` records of a suite's items shipped in `pipelines/data` (the file builds decontaminate
    against by the suite's name)."""
    lines = resources.files("pipelines.data").joinpath(SHIPPED[name]).read_text().splitlines()
    return [json.loads(line) for line in (lines[:limit] if limit else lines)]
