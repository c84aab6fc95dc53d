"""UltraChat-style multi-turn SFT data, exported like HuggingFaceH4/ultrachat_200k.

seeds -> opening -> dialogue -> validate -> dedup_exact -> [decontaminate] -> dedup_near -> export

The default teacher is the embedded Qwen2.5-Coder-1.5B (chosen by bench/teacher_choice.py: every dialogue passes the
guards, against two in three for SmolLM2-135M, and the judge rates its answers higher) and `n_dialogues` is sized
so the build finishes within 10 minutes on 2 CPU cores; with a real teacher raise `n_dialogues` and `turns` and the
token limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.core.recipe import Inputs, Recipe, Refresh
from pipelines.core.stage import Stage
from pipelines.recipes._settings import benchmarks_setting, gen_fraction_setting, index_setting, test_fraction_setting, threshold_setting
from pipelines.stages.dedup import Decontaminate, ExactDedup, NearDedup
from pipelines.stages.ultrachat import AskOpening, Sampling, SimulateDialogue
from pipelines.stages.export import ExportSFT
from pipelines.stages.ultrachat import SeedUltraChat
from pipelines.stages.validate import Validate
from pipelines.teacher.config import TeacherConfig
from pipelines.teacher.server import EmbeddedConfig

DEFAULT_ULTRACHAT_TEACHER = "qwen2.5-coder-1.5b"


@dataclass(frozen=True)
class Config:
    name: str = field(default="ultrachat-convoforge", metadata={"help": "dataset name in the card"})
    n_dialogues: int = field(default=32, metadata={
        "help": "seeds, spread evenly over the three sectors", "range": "[1, 10000000]"})
    turns: int = field(default=2, metadata={
        "help": "user/assistant exchanges per dialogue, at most", "range": "[1, 64]"})
    min_turns: int = field(default=2, metadata={
        "help": "dialogues with fewer exchanges are dropped (at most turns)", "range": "[1, 64]"})
    retries: int = field(default=2, metadata={"help": "re-asks of a user turn that fails a guard", "range": "[0, 10]"})
    sources: tuple[str, ...] = field(default=(), metadata={"help": "text files for the materials sector"})
    sectors: tuple[str, ...] = field(default=("world", "writing", "materials"), metadata={
        "help": "sectors the dialogues are spread over (a refresh with new materials uses only materials)"})
    seed: int = field(default=0, metadata={
        "help": "seed for sampling seeds, personas and materials", "range": "[0, 4294967295]"})
    threshold: float = threshold_setting()
    index: str = index_setting()
    benchmarks: tuple[str, ...] = benchmarks_setting()
    test_fraction: float = test_fraction_setting()
    gen_fraction: float = gen_fraction_setting()
    sampling: Sampling = field(default_factory=Sampling)
    teacher: TeacherConfig = field(default_factory=lambda: TeacherConfig(
        max_concurrency=16, embedded=EmbeddedConfig(model=DEFAULT_ULTRACHAT_TEACHER)))

    def cross_check(self) -> str | None:
        if self.min_turns > self.turns:
            return (f"min_turns ({self.min_turns}) must be at most turns ({self.turns}), else no dialogue is kept: "
                    "--set min_turns or turns")
        return None


def inputs(cfg: Config) -> Inputs:
    seeds = ("data/topics.json", "data/writing_types.json", "data/personas.json")
    return Inputs(sources=cfg.sources, benchmarks=cfg.benchmarks,
                  built_in=seeds + (() if cfg.sources else ("data/materials.py",)))


def card_values(cfg: Config, run) -> dict:
    return {"materials": ", ".join(cfg.sources) or "excerpts of the Python documentation (pydoc_data)"}


def stages(cfg: Config) -> list[Stage]:
    return [
        SeedUltraChat(n_dialogues=cfg.n_dialogues, seed=cfg.seed, sources=cfg.sources, sectors=cfg.sectors),
        AskOpening(sampling=cfg.sampling, retries=cfg.retries),
        SimulateDialogue(sampling=cfg.sampling, turns=cfg.turns, min_turns=cfg.min_turns, retries=cfg.retries),
        Validate(),
        ExactDedup(),
        *([Decontaminate(benchmarks=cfg.benchmarks)] if cfg.benchmarks else []),
        NearDedup(threshold=cfg.threshold, index=cfg.index),
        ExportSFT(test_fraction=cfg.test_fraction, gen_fraction=cfg.gen_fraction, leakage_threshold=cfg.threshold),
    ]


RECIPE = Recipe(
    name="ultrachat", summary="multi-turn SFT dialogues: a user simulator and an assistant (UltraChat)",
    config=Config, stages=stages, card="ultrachat", roles=("teacher",), inputs=inputs, card_values=card_values,
    refresh=Refresh(later=("sectors=materials",)),  # after v1, only the sector that reads the new sources
)
