"""Critique-and-revise preference pairs (Constitutional AI's revision step, CLAIR's minimal contrast).

ingest (conversations ending in an answer: an SFT export or any chats ingest reads) -> dedup_exact -> critique (the
judge names the principle and the span the answer falls short on, grammar-enforced) -> revise (the teacher changes
only that) -> judge (pointwise, both sides) -> keep_improved (the revision must score higher) -> binarize (revised
over original) -> export

The principles are a data file (`constitution`, JSONL); the default answers to revise are the project's Self-Instruct
seed tasks' reference outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

from pipelines.core.recipe import Inputs, Recipe
from pipelines.core.stage import Stage
from pipelines.recipes._settings import test_fraction_setting
from pipelines.release import preference_card
from pipelines.stages.dedup import ExactDedup
from pipelines.stages.export_prefs import ExportPrefs
from pipelines.stages.ingest import Ingest
from pipelines.stages.judge import Judge
from pipelines.stages.pairs import Binarize
from pipelines.stages.revise import Critique, KeepImproved, Revise, ReviseSampling, load_constitution
from pipelines.teacher.config import TeacherConfig
from pipelines.teacher.server import EmbeddedConfig
from pipelines.teacher.weights import DEFAULT_JUDGE

ANSWERS = "data/seed_tasks.jsonl"
CONSTITUTION = "data/constitution.jsonl"


@dataclass(frozen=True)
class Config:
    name: str = field(default="revise-convoforge", metadata={"help": "dataset name in the card"})
    sources: tuple[str, ...] = field(default=(), metadata={
        "help": "conversations ending in an answer: an SFT export or any chats ingest reads (default: the project's "
                "Self-Instruct seed tasks with their reference outputs)"})
    n_rows: int = field(default=32, metadata={"help": "answers read from the default source", "range": "[1, 10000000]"})
    constitution: str = field(default="", metadata={
        "help": "principles, JSONL of {name, critique, revision} (default: the project's six)"})
    min_gain: float = field(default=0.2, metadata={
        "help": "how much higher (1-9) the judge must score a revision than its original for a pair; below it the "
                "difference is within the judge's noise", "range": "[0, 8]"})
    judge_max_tokens: int = field(default=16, metadata={"help": "tokens per pointwise rating", "range": "[1, 4096]"})
    test_fraction: float = test_fraction_setting("split")
    sampling: ReviseSampling = field(default_factory=ReviseSampling)
    teacher: TeacherConfig = field(default_factory=lambda: TeacherConfig(
        max_concurrency=4, reasks=1, embedded=EmbeddedConfig(model=DEFAULT_JUDGE)))
    judge: TeacherConfig = field(default_factory=lambda: TeacherConfig(
        max_concurrency=4, reasks=1, embedded=EmbeddedConfig(model=DEFAULT_JUDGE)))

    def cross_check(self) -> str | None:
        try:
            load_constitution(constitution_path(self))
        except (OSError, ValueError) as error:  # ConfigError is a ValueError
            return str(error)
        return None


def constitution_path(cfg: Config) -> str:
    return cfg.constitution or str(resources.files("pipelines").joinpath(CONSTITUTION))


def inputs(cfg: Config) -> Inputs:
    return Inputs(sources=cfg.sources, seeds=(cfg.constitution,) if cfg.constitution else (),
                  built_in=(CONSTITUTION,) + (() if cfg.sources else (ANSWERS,)))


def stages(cfg: Config) -> list[Stage]:
    answers = f"{resources.files('pipelines').joinpath(ANSWERS)}?max_rows={cfg.n_rows}"
    constitution = constitution_path(cfg)
    return [
        Ingest(sources=cfg.sources or (answers,), kind="conversation"),
        ExactDedup(),
        Critique(constitution=constitution, sampling=cfg.sampling),
        Revise(constitution=constitution, sampling=cfg.sampling),
        Judge(mode="pointwise", orderings=1, max_tokens=cfg.judge_max_tokens),
        KeepImproved(min_gain=cfg.min_gain),
        Binarize(rule="best_vs_worst"),
        ExportPrefs(test_fraction=cfg.test_fraction),
    ]


def card_values(cfg: Config, run) -> dict:
    revision = run.summaries.get("revision", {})
    principles = load_constitution(constitution_path(cfg))
    judged = revision.get("improved", 0) + revision.get("not_better", 0)
    return {"principles": ", ".join(p["name"] for p in principles), "min_gain": cfg.min_gain,
            "constitution": cfg.constitution or f"the project's (`pipelines/{CONSTITUTION}`)",
            "answer_source": ", ".join(cfg.sources) or f"the project's Self-Instruct seed tasks (`pipelines/{ANSWERS}`)",
            "improved": f"{revision.get('improved', 0)} of {judged} judged revisions scored enough higher than the "
                        "original"
                        + (f" (mean gain {revision['mean_gain']} on 1-9)" if revision.get("mean_gain") else ""),
            **preference_card.values(run, cfg.judge, "pointwise")}


RECIPE = Recipe(
    name="revise", summary="critique-and-revise preference pairs: the judge faults an answer against written "
                           "principles, the teacher revises only that, revised over original (Constitutional AI, CLAIR)",
    config=Config, stages=stages, card="revise", roles=("teacher", "judge"), inputs=inputs, card_values=card_values,
)
