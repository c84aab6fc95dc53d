"""Evol-Instruct (Xu et al., WizardLM, 2023): instructions from any source made harder or wider, answered, as SFT splits.

ingest -> prompts -> dedup_exact -> dedup_near -> evolve (rounds of evolution, elimination and answers) -> validate
-> [score] -> [embed -> select] -> export

Instructions come from `sources` (any format ingest reads: Alpaca, Self-Instruct seeds, Dolly, an export of another
recipe; the prompt is a conversation's last user turn) or, by default, from the project's shipped seed tasks. The
embedded default teacher and judge are Qwen2.5-Coder-1.5B-Instruct: small enough for 2 CPU cores, so its rewrites are
short and often shallow, and its judgements a first sort. Point `teacher.base_url` (and `judge.base_url`) at real
models for real data; every request is cached and a killed run resumes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from importlib import resources

import polars as pl

from pipelines.core.recipe import Inputs, Recipe
from pipelines.core.stage import Stage
from pipelines.prompts.evol_instruct import OPERATIONS
from pipelines.recipes._settings import (embedded_teacher_setting, gen_fraction_setting, index_setting,
                                        test_fraction_setting, threshold_setting)
from pipelines.stages.dedup import ExactDedup, NearDedup
from pipelines.stages.evol_instruct import LINEAGE, EvolSampling, Evolve
from pipelines.stages.export import ExportSFT
from pipelines.prompts.score import TOP
from pipelines.stages.score import Score
from pipelines.stages.select import SelectSettings
from pipelines.stages.pairs import ToPrompts
from pipelines.stages.ingest import Ingest
from pipelines.stages.redact import redact_setting
from pipelines.stages.validate import Validate
from pipelines.teacher.config import TeacherConfig
from pipelines.teacher.weights import EMBEDDER_KEY

DEFAULT_EVOL_MODEL = "qwen2.5-coder-1.5b"
SEED_TASKS = "data/seed_tasks.jsonl"


def operations_problem(value: tuple[str, ...]) -> str | None:
    unknown = [op for op in value if op not in OPERATIONS]
    if not value or unknown:
        return f"operations {list(unknown) or 'empty'}: choose among {', '.join(OPERATIONS)}"
    return None


@dataclass(frozen=True)
class Config:
    name: str = field(default="evol-instruct-convoforge", metadata={"help": "dataset name in the card"})
    sources: tuple[str, ...] = field(default=(), metadata={
        "help": "instruction files (default: the shipped seed tasks); PATH?max_rows=N takes the first N"})
    redact: str = redact_setting()
    n_instructions: int = field(default=12, metadata={"help": "instructions taken from the shipped seed tasks (not "
                                                              "from sources)", "range": "[1, 10000000]"})
    prompt_kind: str = field(default="conversation", metadata={
        "help": "conversation (the last user turn is the instruction) or text (each text is one)",
        "choices": ("conversation", "text")})
    rounds: int = field(default=3, metadata={"help": "evolution rounds (M)", "range": "[1, 16]"})
    operations: tuple[str, ...] = field(default=OPERATIONS, metadata={
        "help": "operations drawn from, one per instruction and round", "check": operations_problem})
    retries: int = field(default=1, metadata={"help": "re-asks of a rewrite refused before judging",
                                              "range": "[0, 10]"})
    max_words: int = field(default=200, metadata={"help": "longest evolved instruction kept, in words",
                                                  "range": "[1, 100000]"})
    min_answer_words: int = field(default=8, metadata={"help": "shorter answers eliminate their instruction",
                                                       "range": "[0, 10000]"})
    judge_gain: bool = field(default=True, metadata={"help": "ask the judge whether an evolution gains anything "
                                                             "over its parent (the paper's first rule)"})
    complexity: bool = field(default=True, metadata={"help": "score each root's variants by complexity with the "
                                                             "judge, ranked against their root (EvolComplexity)"})
    quality: bool = field(default=False, metadata={"help": "also score each answer's quality (DEITA's EvolQuality, "
                                                           "1-6; deita_score = complexity x quality) and the judge's "
                                                           "1-9 reward"})
    threshold: float = threshold_setting(" on the source instructions")
    index: str = index_setting(" of source instructions")
    seed: int = field(default=0, metadata={"help": "seed of the operation draws and sampling",
                                           "range": "[0, 4294967295]"})
    test_fraction: float = test_fraction_setting()
    gen_fraction: float = gen_fraction_setting()
    sampling: EvolSampling = field(default_factory=EvolSampling)
    teacher: TeacherConfig = embedded_teacher_setting(DEFAULT_EVOL_MODEL)
    # the same config as the teacher: one embedded server evolves, answers and judges (set judge.* for another model)
    select: SelectSettings = field(default_factory=SelectSettings)
    embedder: TeacherConfig = embedded_teacher_setting(EMBEDDER_KEY)
    judge: TeacherConfig = embedded_teacher_setting(DEFAULT_EVOL_MODEL)

    def cross_check(self) -> str | None:
        if self.select.enabled and not self.complexity:
            return "select.enabled ranks rows by their complexity score: it needs complexity=true"
        if self.quality and not self.complexity:
            return "quality=true is scored by the complexity stage: it needs complexity=true"
        return None


def inputs(cfg: Config) -> Inputs:
    return Inputs(sources=cfg.sources, built_in=() if cfg.sources else (SEED_TASKS,))


def sources(cfg: Config) -> tuple[str, ...]:
    shipped = str(resources.files("pipelines").joinpath(SEED_TASKS))
    return cfg.sources or (f"{shipped}?max_rows={cfg.n_instructions}",)


def stages(cfg: Config) -> list[Stage]:
    score = Score(group="root_id", anchor="root_prompt", quality=cfg.quality, reward=cfg.quality)
    return [
        Ingest(sources=sources(cfg), kind=cfg.prompt_kind, redact=cfg.redact),
        ToPrompts(),
        ExactDedup(),
        NearDedup(threshold=cfg.threshold, index=cfg.index, compare="prompt"),
        Evolve(sampling=cfg.sampling, rounds=cfg.rounds, operations=cfg.operations, retries=cfg.retries,
               max_words=cfg.max_words, min_answer_words=cfg.min_answer_words, judge_gain=cfg.judge_gain,
               seed=cfg.seed),
        Validate(),
        *([score] if cfg.complexity else []),
        *cfg.select.stages("deita_score" if cfg.quality else "complexity"),
        ExportSFT(test_fraction=cfg.test_fraction, gen_fraction=cfg.gen_fraction, leakage_threshold=cfg.threshold,
                  extra_columns=(*LINEAGE, *(score.provides if cfg.complexity else ()))),
    ]


def evolution_table(evolution: dict, key: str) -> str:
    """Markdown rows of the evolve stage's summary: per round or operation, evolutions tried and kept."""
    rows = [f"| {name} | {n['tried']} | {n['kept']} | {n['kept'] / n['tried']:.0%} |"
            for name, n in evolution.get(key, {}).items() if n["tried"]]
    return "\n".join(rows) or "| - | 0 | 0 | - |"


def complexity_table(export_dir) -> str:
    files = sorted(export_dir.glob("data/*.parquet"))
    data = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed") if files else pl.DataFrame()
    if "complexity" not in data.columns:
        return "not scored (`complexity=false`)"
    by_round = data.group_by("round").agg(pl.col("complexity").mean().alias("mean"),
                                          pl.col("complexity").is_null().sum().alias("unread")).sort("round")
    spread = Counter(int(c) for c in data["complexity"].drop_nulls().to_list())
    return ("mean score by round: " + ", ".join(
        f"round {r}: {'-' if m is None else f'{m:.2f}'}" + (f" ({u} unreadable)" if u else "")
        for r, m, u in by_round.iter_rows()) + "; scores: " + (", ".join(
            f"{k}: {n}" for k, n in sorted(spread.items())) or "none readable"))


def card_values(cfg: Config, run) -> dict:
    evolution = run.summaries.get("evolution", {})
    return {"round_table": evolution_table(evolution, "rounds"),
            "operation_table": evolution_table(evolution, "operations"),
            "complexity_table": complexity_table(run.export_dir), "complexity_top": TOP,
            "operations": ", ".join(f"`{op}`" for op in cfg.operations),
            "instruction_source": ", ".join(cfg.sources) or f"the project's shipped seed tasks (`{SEED_TASKS}`, "
                                                            f"first {cfg.n_instructions} instances)"}


RECIPE = Recipe(
    name="evol_instruct", summary="instructions evolved in depth and breadth, eliminated by rule, answered "
                                  "(Evol-Instruct)",
    config=Config, stages=stages, card="evol_instruct", roles=("teacher", "judge", "embedder"), inputs=inputs,
    card_values=card_values,
)
