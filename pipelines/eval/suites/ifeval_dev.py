"""ifeval_dev: the project's own dev set of IFEval-type constraints, scored by IFEval's checkers (`if-verifiable`'s
copy, by IFEval's rules: `pipelines.eval.following`). The set a recipe may be tuned on; `ifbench` stays out of
distribution.

Made by `make()` (shipped as `pipelines/data/ifeval_dev.jsonl`; `python -m pipelines.eval.suites.ifeval_dev`
rewrites it): each of the project's own seed instructions (the UltraFeedback prompts, the UltraChat writing tasks and
topics, the Self-Instruct seed tasks without input; none from IFEval or IFBench) gets one to three constraints
(`pipelines.prompts.verified_if`) drawn by a seeded generator. The `verified_if` recipe draws its constraints the same
way onto other instructions (the Orca prompts, reasoning problems and Self-Instruct seed tasks with input, by
default)."""

from __future__ import annotations

import json
import random
from importlib import resources

from pipelines.eval import following
from pipelines.eval.suites import shipped
from pipelines.prompts.verified_if import constrain

NAME = "ifeval_dev"
ABOUT = ("the project's IFEval-type dev set (its own seed instructions), prompt-level strict accuracy by IFEval's "
         "checkers")
DEFAULT_LIMIT = 120
PARAMS = {"max_tokens": 768, "temperature": 0.0, "seed": 0}
SEED = 20261207


def seed_instructions() -> list[str]:
    data = resources.files("pipelines.data")
    read = lambda name: data.joinpath(name).read_text(encoding="utf-8")  # noqa: E731
    out = [json.loads(line)["text"] for line in read("feedback_prompts.jsonl").splitlines() if line.strip()]
    out += [f"Write {w}." for w in json.loads(read("writing_types.json"))]
    out += [f"Explain {t}." for t in json.loads(read("topics.json"))]
    out += [t["instruction"] for line in read("seed_tasks.jsonl").splitlines() if line.strip()
            for t in [json.loads(line)] if not any(i["input"] for i in t["instances"])]
    return out


def make(seed: int = SEED) -> list[dict]:
    """One item per seed instruction, in a seeded order, in IFEval's input format."""
    rng = random.Random(seed)
    bases = seed_instructions()
    rng.shuffle(bases)
    return [{"key": key, **constrain(base, rng), "base": base} for key, base in enumerate(bases)]


def items(limit: int | None, options: dict | None = None) -> list[dict]:
    return [{"id": f"ifeval_dev-{r['key']}", **{k: r[k] for k in ("prompt", "instruction_id_list", "kwargs", "base")}}
            for r in shipped(NAME, limit)]


def prompt_of(item: dict) -> str:
    """The seed instruction: the constraints' wording is IFEval's own, shared with any IFEval-style training data by
    design, so it is not what makes an item seen in training."""
    return item["base"]


def run(rows: list[dict], ctx) -> list[dict]:
    return following.run(rows, ctx, "ifeval", PARAMS, NAME)


summary = following.summary

if __name__ == "__main__":
    target = resources.files("pipelines.data").joinpath("ifeval_dev.jsonl")
    with open(str(target), "w", encoding="utf-8") as out:
        out.writelines(json.dumps(item, ensure_ascii=False) + "\n" for item in make())
    print(f"wrote {target}")
