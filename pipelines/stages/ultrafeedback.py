"""UltraFeedback's completions: several answers per prompt, from the teacher pool, under sampled principles.

Complete: messages, prompt_id -> completions (model, principle, content), rated next by `stages/judge.py` and
binarized by `stages/pairs.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.core.stage import Context
from pipelines.prompts import ultrafeedback as F
from pipelines.stages.pairs import COMPLETIONS, seeded
from pipelines.teacher.stage import TeacherStage, Verdict
from pipelines.teacher.wire import Request, Result


@dataclass
class Complete(TeacherStage):
    """`n_completions` answers per prompt: completion k goes to model k of the pool (in turn) with a temperature
    from `temperatures` and a system prompt of a principle sampled per completion."""

    n_completions: int = 4
    models: tuple[str, ...] = ()  # models of the teacher pool, asked in turn; empty = every model of the pool
    temperatures: tuple[float, ...] = (0.7, 1.0)
    top_p: float = 0.95
    max_tokens: int = 160
    seed: int = 0
    name = "complete"
    requires = ("messages", "prompt_id")
    provides = ("completions",)
    dtypes = {"completions": COMPLETIONS}
    batch_size = 32
    retries = 0
    sees_failures = True
    prompt_files = (F.PROMPT_FILE,)

    def plan(self, pid: str, models: list[str]) -> list[dict]:
        """Model, principle, system prompt and sampling of each completion of prompt `pid` (deterministic)."""
        rng = seeded(self.seed, pid)
        out = []
        for k in range(self.n_completions):
            principle = rng.choice(sorted(F.PRINCIPLES))
            temperature = self.temperatures[(k // len(models)) % len(self.temperatures)]
            out.append({"model": models[k % len(models)], "principle": principle,
                        "system": F.system_prompt(principle, rng.randrange(1000)),
                        "params": {"max_tokens": self.max_tokens, "temperature": temperature, "top_p": self.top_p,
                                   "seed": rng.randrange(2**31)}})
        return out

    def begin(self, ctx: Context) -> None:
        self._models = list(self.models) or self.client(ctx).models()

    def requests(self, row: dict, attempt: int) -> list[Request]:
        return [Request([{"role": "system", "content": p["system"]}, *row["messages"]], p["params"], model=p["model"])
                for p in self.plan(row["prompt_id"], self._models)]

    def accept(self, row: dict, results: list[Result]) -> Verdict:
        done, errors = [], []
        for p, result in zip(self.plan(row["prompt_id"], self._models), results):
            text = (result.text or "").strip()
            if result.error or not text:
                errors.append(result.error or "empty answer")
                continue
            done.append({"model": p["model"], "principle": p["principle"], "content": text, "ratings": [],
                         "overall": None})
        reason = None if len(done) >= 2 else \
            f"too_few_completions: {len(done)} of {len(results)} answered ({errors[0]})"
        return Verdict({"completions": done}, reason, counts={"completion_failed": len(errors)} if errors else {})
