"""Instruction following, checked the way IFEval and IFBench check it (their `evaluation_lib`), with the checkers of
the pinned `if-verifiable` package (`ifeval` or `ifbench`): the eval suites and the verified_if recipe use it.

An item is `{prompt, instruction_id_list, kwargs}` as in both benchmarks' files. Each instruction's checker is built
from its kwargs (None values dropped; the prompt passed again when the checker asks for it) and checks the answer
as it came (strict) or any of eight loosened variants (loose: the first and/or last line removed, `*` removed).
An instruction counts as followed only for a non-blank answer. Prompt-level: all instructions followed.

The checkers' randomness is pinned: `random` is seeded per instruction and langdetect's detector with seed 0 (IFEval
leaves both unseeded; only checkers built without their kwargs, or the language checks, draw on them).
"""

from __future__ import annotations

import importlib
import random
from functools import cache

from pipelines.core.errors import ConfigError
from pipelines.teacher.eval_data import nltk_ready


@cache
def registry(kind: str) -> dict:
    """`ifeval` or `ifbench`: instruction id -> checker class."""
    nltk_ready(log=lambda m: None)  # before the import: if-verifiable's ifbench module looks for its data then
    import langdetect

    langdetect.DetectorFactory.seed = 0
    return importlib.import_module(f"if_verifiable.{kind}.instructions_registry").INSTRUCTION_DICT


def loose_variants(response: str) -> list[str]:
    lines = response.split("\n")
    cut = ["\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return [response, response.replace("*", ""), *cut, *(c.replace("*", "") for c in cut)]


def check(response: str, item: dict, kind: str) -> tuple[list[bool], list[bool]]:
    """(strict, loose): one verdict per instruction of `item`."""
    checkers = registry(kind)
    variants = loose_variants(response)
    strict, loose = [], []
    for k, instruction_id in enumerate(item["instruction_id_list"]):
        if instruction_id not in checkers:
            raise ConfigError(f"item {item.get('id', item.get('key'))}: unknown {kind} instruction {instruction_id!r}")
        random.seed(k)
        checker = checkers[instruction_id](instruction_id)
        checker.build_description(**{key: v for key, v in (item["kwargs"][k] or {}).items() if v is not None})
        if "prompt" in (checker.get_instruction_args() or {}):
            checker.build_description(prompt=item["prompt"])
        strict.append(_follows(checker, response))
        loose.append(any(_follows(checker, v) for v in variants))
    return strict, loose


def _follows(checker, text: str) -> bool:
    """A checker that raises on an answer (some do, on text they never expected) counts it as not followed."""
    try:
        return bool(text.strip() and checker.check_following(text))
    except Exception:  # noqa: BLE001 - any checker's failure on any text
        return False
