"""Instruction following, scored the way IFEval and IFBench score it (their `evaluation_lib`), with the checkers of
the pinned `if-verifiable` package (`ifeval` or `ifbench`).

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
from pipelines.eval.assets import nltk_ready
from pipelines.eval.stats import mean_ci, ratio_ci, rounded


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


def run(rows: list[dict], ctx, kind: str, params: dict, suite: str) -> list[dict]:
    """Ask MODEL (and the baseline) every prompt; score each answer. `score` is prompt-level strict accuracy."""
    from pipelines.teacher.client import Request

    requests = [Request([{"role": "user", "content": r["prompt"]}], params) for r in rows]
    out = [dict(r) for r in rows]
    for prefix, model in {"": ctx.model, "baseline_": ctx.baseline}.items():
        if model is None:
            continue
        for row, result in zip(out, ctx.generate(model, requests, f"{suite} {model.name}")):
            if result.text is None:
                strict = loose = [False] * len(row["instruction_id_list"])
                verdict = f"no output: {result.error}"
            else:
                strict, loose = check(result.text, row, kind)
                verdict = ("empty answer" if not result.text.strip() else
                           "followed all" if all(strict) else "missed some")
            missed = [i for i, ok in zip(row["instruction_id_list"], strict) if not ok]
            row.update({f"{prefix}output": result.text, f"{prefix}strict": strict, f"{prefix}loose": loose,
                        f"{prefix}score": float(all(strict)), f"{prefix}verdict": verdict, f"{prefix}missed": missed,
                        f"{prefix}finish_reason": result.finish_reason})
    return out


def summary(rows: list[dict]) -> dict:
    """Prompt-level loose and instruction-level strict and loose accuracy, with bootstrap 95% CIs over items."""
    out = {}
    for prefix in ("", "baseline_"):
        if not rows or f"{prefix}strict" not in rows[0]:
            continue
        strict = [r[f"{prefix}strict"] for r in rows]
        loose = [r[f"{prefix}loose"] for r in rows]
        sizes = [len(s) for s in strict]
        out[f"{prefix}also"] = {
            "prompt-level loose": rounded(mean_ci([float(all(v)) for v in loose])),
            "instruction-level strict": rounded(ratio_ci([sum(v) for v in strict], sizes)),
            "instruction-level loose": rounded(ratio_ci([sum(v) for v in loose], sizes)),
        }
    return out
