"""Verifiable instruction following (Tulu 3's idea): prompts with IFEval constraints, answers checked by IFEval's
checkers.

Constrain:   messages, prompt -> `variants` rows per prompt, each the prompt with one to three constraints drawn onto
             it (`pipelines.prompts.verified_if`, seeded by the prompt and the variant); `meta` keeps the base prompt,
             the instruction ids and their kwargs.
CheckSample: messages, meta -> completions: `samples` answers per prompt from the teacher (the student served as
             GGUF, or any endpoint), each checked strictly (`pipelines.prompts.following.check`); a completion's
             `overall` is the share of its instructions followed, each instruction a rating of 1 or 0. A prompt with
             no answer that follows every instruction is dropped (`no_verified_answer`); binarizing best against
             worst then pairs an answer that passes every check with one that fails (ties are dropped there). Its
             summary has pass@1 and pass@k overall and per instruction type.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field

import polars as pl

from pipelines.core.config import max_tokens_setting, temperature_setting
from pipelines.core.stage import MESSAGES, Context, MapStage
from pipelines.stages.pairs import COMPLETIONS
from pipelines.teacher.wire import Request, Result
from pipelines.teacher.stage import Sampling, TeacherStage, Verdict, pass_rates
from schemas import conversation_id, prompt_id


@dataclass
class Constrain(MapStage):
    variants: int = 2
    seed: int = 0
    name = "constrain"
    requires = ("messages", "prompt", "prompt_id")
    provides = ("id", "messages", "prompt", "prompt_id", "meta")
    batch_size = 256

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        from pipelines.prompts.verified_if import constrain

        out = []
        for row in batch.to_dicts():
            base = row["prompt"]
            for k in range(self.variants):
                item = constrain(base, random.Random(f"{self.seed}:{row['prompt_id']}:{k}"))
                messages = [*row["messages"][:-1], {"role": "user", "content": item["prompt"]}]
                meta = {"base": base, "instruction_id_list": item["instruction_id_list"], "kwargs": item["kwargs"]}
                out.append({**row, "id": conversation_id(messages), "messages": messages, "prompt": item["prompt"],
                            "prompt_id": prompt_id(item["prompt"]), "meta": json.dumps(meta)})
                ctx.count("constraints", len(item["instruction_id_list"]))
        return pl.DataFrame(out, schema={**batch.schema, "messages": MESSAGES, "meta": pl.String})


@dataclass
class IFSampling(Sampling):
    temperature: float = temperature_setting(0.8)
    max_tokens: int = max_tokens_setting(256, "tokens per sampled answer")


@dataclass
class CheckSample(TeacherStage):
    sampling: IFSampling = field(default_factory=IFSampling)
    samples: int = 4
    name = "check"
    requires = ("messages", "prompt", "prompt_id", "meta")
    provides = ("completions",)
    dtypes = {"completions": COMPLETIONS}
    batch_size = 16
    retries = 0
    sees_failures = True

    def summary(self, counters: dict) -> dict:
        types = sorted({k.split("|", 1)[1] for k in counters if k.startswith("tries|")})
        return {"verification": {
            **pass_rates(counters, self.samples, "passed"),
            "by_instruction": {t: round(counters.get(f"follows|{t}", 0) / counters[f"tries|{t}"], 4) for t in types}}}

    def begin(self, ctx: Context) -> None:
        self._model = self.client(ctx).models()[0]

    def requests(self, row: dict, attempt: int) -> list[Request]:
        return [Request(row["messages"], self.sampling.request_params(self.sampling.max_tokens,
                                                                      f"{row['prompt_id']}/s{k}"))
                for k in range(self.samples)]

    def accept(self, row: dict, results: list[Result]) -> Verdict:
        from pipelines.prompts.following import check

        item = {"prompt": row["prompt"], **json.loads(row["meta"])}
        counts = Counter(prompts=1, samples=len(results))
        done, passed = [], 0
        for k, result in enumerate(results):
            if result.error or not (result.text or "").strip():
                counts["sample_failed"] += 1
                continue
            strict, _ = check(result.text, item, "ifeval")
            for instruction, ok in zip(item["instruction_id_list"], strict):
                counts[f"tries|{instruction}"] += 1
                counts[f"follows|{instruction}"] += ok
            passed += all(strict)
            done.append({"model": self._model, "principle": f"sample {k}",
                         "content": result.text.strip(), "overall": sum(strict) / len(strict),
                         "ratings": [{"aspect": i, "rating": float(ok), "rationale": "IFEval checker, strict"}
                                     for i, ok in zip(item["instruction_id_list"], strict)]})
        counts["passed"] += passed
        counts["solved"] += passed > 0
        reason = None if passed else f"no_verified_answer: none of {self.samples} answers followed every instruction"
        return Verdict({"completions": done}, reason, counts=dict(counts))


def pass_table(verification: dict) -> str:
    """Markdown rows: each instruction type's strict pass rate over every sampled answer."""
    found = verification.get("by_instruction") or {}
    return "\n".join(f"| `{t}` | {rate:.3f} |" for t, rate in sorted(found.items(), key=lambda x: x[1])) or "| - | - |"

