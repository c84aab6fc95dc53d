"""A project-made set of graded preference pairs: a good answer vs the same answer degraded by a rule.

The good answers are AlpacaEval's example outputs (../shared/data/real/alpaca_eval_example_outputs.json, answers
to its 805 instructions), cut at a sentence end near MAX_CHARS so judge prompts stay short. Each instruction gets
one rule, in turn, so the set is balanced over rules:
- truncated: the answer cut to its first 15% (at a word boundary);
- off_topic: the good answer of another instruction;
- wrong_numbers: every number in the answer changed (answers without numbers are skipped for this rule);
- refusal: a polite refusal to answer;
- echo: the instruction repeated back, nothing else;
- looping: the answer's first sentence repeated until it is as long as the answer.
The preferred answer is always the good one. Deterministic: the same pairs on every run.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "alpaca_eval_example_outputs.json"
RULES = ("truncated", "off_topic", "wrong_numbers", "refusal", "echo", "looping")
MAX_CHARS = 600
REFUSALS = ("I'm sorry, but I can't help with that request.",
            "Unfortunately I am not able to answer this. Please consult another source.",
            "I would rather not answer that question.")
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def shorten(text: str, limit: int = MAX_CHARS) -> str:
    """The answer up to the last sentence end before `limit` (the whole answer when shorter)."""
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = max(text.rfind(". ", 0, limit), text.rfind("\n", 0, limit))
    return text[: cut + 1].strip() if cut > limit // 3 else text[:limit].rsplit(" ", 1)[0]


def degrade(rule: str, instruction: str, good: str, other: str, rng: random.Random) -> str | None:
    if rule == "truncated":
        words = good.split()
        return " ".join(words[: max(1, len(words) * 15 // 100)]) if len(words) >= 20 else None
    if rule == "off_topic":
        return other
    if rule == "wrong_numbers":
        if not NUMBER.search(good):
            return None
        return NUMBER.sub(lambda m: str(int(float(m.group()) * 3 + 7)), good)
    if rule == "refusal":
        return rng.choice(REFUSALS)
    if rule == "echo":
        return instruction
    first = re.split(r"(?<=[.!?])\s", good, maxsplit=1)[0]
    return " ".join([first] * max(3, len(good) // max(1, len(first) + 1)))[: max(len(good), 3 * len(first))]


def graded_pairs(n: int = 240, seed: int = 0) -> list[dict]:
    """[{"prompt", "preferred", "other", "rule"}] with the rules in turn (a rule that does not apply to an answer
    passes to the next instruction)."""
    records = json.loads(DATA.read_text())
    rng = random.Random(seed)
    order = list(range(len(records)))
    rng.shuffle(order)
    out, rule_index = [], 0
    for k, i in enumerate(order):
        if len(out) >= n:
            break
        instruction = records[i]["instruction"].strip()
        good = shorten(records[i]["output"])
        if len(good.split()) < 20:
            continue
        other = shorten(records[order[(k + 1) % len(order)]]["output"])
        rule = RULES[rule_index % len(RULES)]
        bad = degrade(rule, instruction, good, other, rng)
        if bad is None or bad.strip() == good:
            continue
        out.append({"prompt": instruction, "preferred": good, "other": bad, "rule": rule})
        rule_index += 1
    return out
