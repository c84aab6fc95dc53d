"""Verified instruction following (Tulu 3's idea): prompts carrying IFEval constraints, answers sampled and checked by
IFEval's own checkers, exported as SFT rows (verified answers) and DPO pairs (an answer that passes every check
against one that fails).

ingest -> prompts -> dedup_exact -> decontaminate (the base instructions, against ifeval_dev and ifbench by default:
the constraint wording is IFEval's own and shared with them by design) -> constrain (1-3 constraints per prompt,
`variants` per base) -> check (`samples` answers per prompt, each checked) -> binarize (best against
worst) -> export

Base instructions come from `sources` (any format ingest reads) or, by default, the project's Orca prompts,
reasoning problems and Self-Instruct seed tasks (105 rows, 89 after dedup); the seed tasks without input are
`ifeval_dev`'s own bases, and decontamination drops them (a whole-prompt match) before any constraint is drawn.
The teacher is the student to train, served as GGUF (`teacher.embedded.model=MODEL_DIR/gguf/model-q8_0.gguf`:
on-policy), by default the embedded SmolLM2-135M, or any endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

from pipelines.core.recipe import Inputs, Recipe
from pipelines.core.stage import Stage
from pipelines.recipes._settings import benchmarks_setting, test_fraction_setting
from pipelines.release import preference_card
from pipelines.stages.verified_if import CheckSample, Constrain, IFSampling, pass_table
from pipelines.stages.dedup import Decontaminate, ExactDedup
from pipelines.stages.export_prefs import ExportPrefs
from pipelines.stages.pairs import Binarize, ToPrompts
from pipelines.stages.ingest import Ingest
from pipelines.teacher.config import TeacherConfig

BASES = ("data/orca_prompts.jsonl", "data/reasoning_problems.jsonl", "data/seed_tasks.jsonl")


@dataclass(frozen=True)
class Config:
    name: str = field(default="verified-if-convoforge", metadata={"help": "dataset name in the card"})
    sources: tuple[str, ...] = field(default=(), metadata={
        "help": "base instruction files (default: the project's Orca prompts, reasoning problems and seed tasks)"})
    prompt_kind: str = field(default="conversation", metadata={
        "help": "conversation (the turns up to the last user turn are the base) or text (one base per text)",
        "choices": ("conversation", "text")})
    variants: int = field(default=2, metadata={"help": "constrained prompts made from each base instruction",
                                               "range": "[1, 64]"})
    samples: int = field(default=4, metadata={"help": "answers sampled and checked per prompt (k)",
                                              "range": "[2, 64]"})
    seed: int = field(default=0, metadata={"help": "seed of the constraints drawn", "range": "[0, 4294967295]"})
    benchmarks: tuple[str, ...] = benchmarks_setting(("ifeval_dev", "ifbench"))
    test_fraction: float = test_fraction_setting("split")
    sampling: IFSampling = field(default_factory=IFSampling)
    teacher: TeacherConfig = field(default_factory=lambda: TeacherConfig(max_concurrency=4, reasks=0))


def inputs(cfg: Config) -> Inputs:
    return Inputs(sources=cfg.sources, benchmarks=cfg.benchmarks, built_in=() if cfg.sources else BASES)


def stages(cfg: Config) -> list[Stage]:
    shipped = tuple(str(resources.files("pipelines").joinpath(b)) for b in BASES)
    return [
        Ingest(sources=cfg.sources or shipped, kind=cfg.prompt_kind if cfg.sources else "conversation"),
        ToPrompts(),
        ExactDedup(),
        # on the base instructions: constraint wording is IFEval's own, shared with the eval sets by design
        *([Decontaminate(benchmarks=cfg.benchmarks)] if cfg.benchmarks else []),
        Constrain(variants=cfg.variants, seed=cfg.seed),
        CheckSample(sampling=cfg.sampling, samples=cfg.samples),
        Binarize(rule="best_vs_worst", seed=cfg.seed),
        ExportPrefs(test_fraction=cfg.test_fraction),
    ]


def card_values(cfg: Config, run) -> dict:
    found = run.summaries.get("verification", {})
    passes = ", ".join(f"{k} {v:.3f}" for k, v in found.items() if k.startswith("pass@") and v is not None)
    return {"pass_rates": f"{passes or 'none measured'} over {found.get('prompts', 0)} prompts",
            "pass_table": pass_table(found),
            "base_source": ", ".join(cfg.sources) or "the project's Orca prompts, reasoning problems and seed tasks "
                                                     f"(`{'`, `'.join(BASES)}`)",
            **preference_card.values(run, None, "listwise")}


RECIPE = Recipe(
    name="verified_if", summary="verifiable instruction following: constrained prompts, k answers checked by IFEval's "
                                "checkers, SFT rows and pass/fail DPO pairs (Tulu 3)",
    config=Config, stages=stages, card="verified_if", roles=("teacher",), inputs=inputs, card_values=card_values,
)
