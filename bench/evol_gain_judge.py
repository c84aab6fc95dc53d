"""How well the judge tells an evolution with no information gain from one that adds a requirement (Evol-Instruct's
first elimination rule), asked as the paper asks it (the verdict alone) and as the recipe asks it (the difference
named first, then the verdict).

    python bench/evol_gain_judge.py [--n 40] [--judge qwen2.5-coder-1.5b] [--base-url URL --model NAME]

Pairs come from the shipped seed tasks: each instruction against itself reworded with nothing added ("Please ...":
should be Equal) and against itself with one requirement added (a word limit, step-by-step reasoning, a table, a
list of mistakes: should be Not Equal). Prints, per phrasing: the share of equal pairs called Equal, of gain pairs
called Not Equal, their mean (balanced accuracy), unreadable answers and seconds per pair. Answers are cached in
$TMPDIR/evol-gain-judge/requests.sqlite.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.prompts import evol_instruct as E  # noqa: E402
from pipelines.teacher.client import Teacher  # noqa: E402
from pipelines.teacher.config import TeacherConfig  # noqa: E402
from pipelines.teacher.wire import Request  # noqa: E402
from pipelines.teacher.server import EmbeddedConfig  # noqa: E402

ADDED = ("Answer in at most 50 words and give one concrete example.",
         "Explain your reasoning step by step before the final answer.",
         "Present the result as a table with two columns.",
         "Also list two common mistakes people make with this.")
VERDICT_ONLY = {"type": "object", "required": ["judgement"], "additionalProperties": False,
                "properties": {"judgement": {"enum": ["Equal", "Not Equal"]}}}


def pairs(n: int) -> list[tuple[str, str, bool]]:
    """(parent, child, equal) for the first n/2 seed tasks."""
    tasks = [json.loads(line)["instruction"] for line in (ROOT / "pipelines/data/seed_tasks.jsonl").open()]
    out = []
    for k, text in enumerate(tasks[: n // 2]):
        out.append((text, "Please " + text[0].lower() + text[1:], True))
        out.append((text, f"{text} {ADDED[k % len(ADDED)]}", False))
    return out


def verdict_only(parent: str, child: str) -> list[dict]:
    messages = E.equal_request(parent, child)
    body = messages[1]["content"]
    body = body[: body.rindex("Reply as JSON")] + 'Reply as JSON with the key "judgement": "Equal" or "Not Equal".'
    return [messages[0], {"role": "user", "content": body}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--judge", default="qwen2.5-coder-1.5b")
    parser.add_argument("--base-url", default="")
    parser.add_argument("--model", default="")
    args = parser.parse_args()
    work = Path(tempfile.gettempdir()) / "evol-gain-judge"
    work.mkdir(exist_ok=True)
    config = TeacherConfig(base_url=args.base_url, model=args.model, max_concurrency=8,
                           embedded=EmbeddedConfig(model=args.judge))
    judge = Teacher(config, work / "requests.sqlite", work / "server.log", log=lambda m: None)
    items = pairs(args.n)
    phrasings = {"verdict only (the paper)": (verdict_only, VERDICT_ONLY),
                 "difference first (the recipe)": (E.equal_request, E.EQUAL_SCHEMA)}
    print(f"judge: {args.model or args.judge}; {len(items)} pairs ({sum(e for *_, e in items)} equal)")
    print("| phrasing | equal called Equal | gain called Not Equal | balanced accuracy | unreadable | s/pair |")
    print("|---|---|---|---|---|---|")
    try:
        for name, (build, schema) in phrasings.items():
            started = time.monotonic()
            results = judge.chat_many([Request(build(a, b), {"max_tokens": 96, "temperature": 0.0}, schema=schema)
                                       for a, b, _ in items], desc=name)
            said = [None if r.error else E.is_equal(r.data) for r in results]
            equal = [s for s, (*_, e) in zip(said, items) if e]
            gain = [s for s, (*_, e) in zip(said, items) if not e]
            hit_equal = sum(s is True for s in equal) / len(equal)
            hit_gain = sum(s is False for s in gain) / len(gain)
            print(f"| {name} | {hit_equal:.2f} | {hit_gain:.2f} | {(hit_equal + hit_gain) / 2:.2f} | "
                  f"{sum(s is None for s in said)} | {(time.monotonic() - started) / len(items):.2f} |")
    finally:
        judge.close()


if __name__ == "__main__":
    main()
