"""Evaluation suites. A suite is a module with `NAME`, `DEFAULT_LIMIT`, `ABOUT` (one line for the report),
`items(limit, options)` (its items, in a fixed order; `options` holds the command's suite options, such as
`prefs_export`, `tools_export`), `prompt_of(item)` (the text the model is asked, which is decontaminated against its training
data) and `run(items, ctx)` (one row per item: what was asked, what each model
answered, and `score` in [0, 1] for MODEL, plus `baseline_score` when the suite scores the baseline on its own);
optionally `summary(rows)` for numbers beyond the mean score (an `also` dict of name -> CI is shown in the report).

Built-in suites are the modules of this package; a user's own are the modules in the folders named by
`PIPELINES_SUITE_PATH` (separated like PATH; a suite's name is its module's name, a built-in name cannot be
shadowed). `read_jsonl(path)` reads a suite's items file, naming the file and line of a bad one."""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

from pipelines.core.errors import ConfigError
from pipelines.core.plugins import import_file, user_modules
from pipelines.dedup.decontam import SUITES as SHIPPED

SUITES = ("ifbench", "ifeval_dev", "gsm8k", "judged", "prefs", "tool_calls")  # built in


@dataclass
class SuiteContext:
    """What a suite asks through: `generate(model, requests, desc)` and `judge(requests, desc)` return the teacher
    client's results in order (cached, retried, resumable); `baseline` is None without `--baseline`."""

    model: object
    baseline: object | None
    generate: Callable
    judge: Callable | None


def user_suites() -> dict[str, Path]:
    return {name: path for name, path in user_modules("PIPELINES_SUITE_PATH").items() if name not in SUITES}


def names() -> tuple[str, ...]:
    return SUITES + tuple(user_suites())


def load_suite(name: str):
    if name in SUITES:
        return importlib.import_module(f"pipelines.eval.suites.{name}")
    path = user_suites().get(name)
    if path is None:
        raise ConfigError(f"suite {name!r}: choose among {', '.join(names())} (or add NAME.py to a folder named "
                          "by PIPELINES_SUITE_PATH)")
    try:
        module = import_file(f"pipelines_suite_{name}", path)
    except Exception as exc:  # noqa: BLE001 - a user's module failing in any way is one line
        raise ConfigError(f"suite {name} ({path}) does not load: {type(exc).__name__}: {exc}") from None
    missing = [a for a in ("ABOUT", "DEFAULT_LIMIT", "items", "prompt_of", "run") if not hasattr(module, a)]
    if missing:
        raise ConfigError(f"suite {name} ({path}) lacks {', '.join(missing)} (see pipelines/eval/suites/__init__.py)")
    return module


def read_jsonl(path: Path | str, limit: int | None = None, text: str | None = None) -> list[dict]:
    """The first `limit` JSON objects of a JSONL file (blank lines skipped); a line that is not one is a ConfigError
    naming `path:line`."""
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the suite's items: {exc}") from None
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if limit and len(out) >= limit:
            break
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{path}:{number}: not a JSON line ({exc})") from None
        if not isinstance(record, dict):
            raise ConfigError(f"{path}:{number}: a suite item must be a JSON object, not {type(record).__name__}")
        out.append(record)
    return out


def shipped(name: str, limit: int | None) -> list[dict]:
    """The first `limit` records of a suite's items shipped in `pipelines/data` (the file builds decontaminate
    against by the suite's name)."""
    source = resources.files("pipelines.data").joinpath(SHIPPED[name].partition("?")[0])
    return read_jsonl(str(source), limit, source.read_text(encoding="utf-8"))
