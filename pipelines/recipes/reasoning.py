"""Verified step-by-step answers by rejection sampling, on any question-answer source, as SFT splits.

ingest -> references -> dedup_exact -> [decontaminate] -> verify (k samples per prompt, final answers checked
against the reference by rule) -> keep_verified (a row per answer, wrong ones dropped) -> validate -> export

Sources are any format ingest reads whose last assistant turn holds a final answer these rules read: GSM8K's
`#### 42`, a `\\boxed{...}` answer (MATH), a multiple-choice letter; by default 12 project-written word problems.
Each prompt gets `samples` answers; those whose final answer agrees with the reference are kept (`keep` per
prompt), the others dropped with the answer they gave. The card reports pass@1 and pass@k of the teacher.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

from pipelines.core.recipe import Inputs, Recipe
from pipelines.core.stage import Stage
from pipelines.recipes._settings import (benchmarks_setting, embedded_teacher_setting, gen_fraction_setting,
                                         test_fraction_setting)
from pipelines.stages.dedup import Decontaminate, ExactDedup
from pipelines.stages.export import ExportSFT
from pipelines.stages.ingest import Ingest
from pipelines.stages.validate import Validate
from pipelines.stages.reasoning import KeepVerified, ReasoningSampling, SplitReference, Verify
from pipelines.teacher.config import TeacherConfig

PROBLEMS = "data/reasoning_problems.jsonl"


@dataclass(frozen=True)
class Config:
    name: str = field(default="reasoning-convoforge", metadata={"help": "dataset name in the card"})
    sources: tuple[str, ...] = field(default=(), metadata={
        "help": "question-answer files (default: 12 shipped word problems); PATH?max_rows=N takes the first N"})
    samples: int = field(default=4, metadata={"help": "answers sampled per prompt (k)", "range": "[1, 256]"})
    keep: int = field(default=1, metadata={"help": "verified answers kept per prompt", "range": "[1, 256]"})
    benchmarks: tuple[str, ...] = benchmarks_setting()
    test_fraction: float = test_fraction_setting()
    gen_fraction: float = gen_fraction_setting()
    sampling: ReasoningSampling = field(default_factory=ReasoningSampling)
    teacher: TeacherConfig = embedded_teacher_setting("qwen2.5-coder-1.5b")


def inputs(cfg: Config) -> Inputs:
    return Inputs(sources=cfg.sources, benchmarks=cfg.benchmarks, built_in=() if cfg.sources else (PROBLEMS,))


def stages(cfg: Config) -> list[Stage]:
    shipped = str(resources.files("pipelines").joinpath(PROBLEMS))
    return [
        Ingest(sources=cfg.sources or (shipped,)),
        SplitReference(),
        ExactDedup(),
        *([Decontaminate(benchmarks=cfg.benchmarks)] if cfg.benchmarks else []),
        Verify(sampling=cfg.sampling, samples=cfg.samples),
        KeepVerified(keep=cfg.keep),
        Validate(),
        ExportSFT(test_fraction=cfg.test_fraction, gen_fraction=cfg.gen_fraction,
                  extra_columns=("reference_answer", "verified")),
    ]


def card_values(cfg: Config, run) -> dict:
    found = run.summaries.get("verification", {})
    passes = ", ".join(f"{k} {v:.3f}" for k, v in found.items() if k.startswith("pass@") and v is not None)
    return {"pass_rates": f"{passes or 'none measured'} over {found.get('prompts', 0)} prompts",
            "problem_source": ", ".join(cfg.sources) or f"12 project-written word problems (`{PROBLEMS}`)"}


RECIPE = Recipe(
    name="reasoning", summary="verified step-by-step answers: k samples per question, kept when the final answer "
                              "matches the reference (rejection sampling)",
    config=Config, stages=stages, card="reasoning", roles=("teacher",), inputs=inputs, card_values=card_values,
)
