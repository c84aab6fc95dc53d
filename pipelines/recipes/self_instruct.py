"""Self-Instruct / Alpaca-style instruction data: SFT splits with Alpaca columns (instruction, input, output).

instructions -> inputs -> outputs -> validate -> dedup_exact -> export

Seed tasks are in the Self-Instruct format (`pipelines/data/seed_tasks.jsonl`, 42 project-written tasks; any file in
that format with `--set seeds=PATH`, e.g. the 175 original seed tasks). The defaults are sized so the embedded
SmolLM2-135M teacher finishes in a few minutes on 2 CPU cores; with a real teacher raise `n_instructions` (Alpaca:
52k), `max_rounds` and the token limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

from pipelines.core.recipe import Inputs, Recipe
from pipelines.core.stage import Stage
from pipelines.prompts.self_instruct import input_shots, load_seed_tasks
from pipelines.recipes._settings import embedded_teacher_setting, gen_fraction_setting, test_fraction_setting
from pipelines.stages.dedup import ExactDedup
from pipelines.stages.export import ExportSFT
from pipelines.stages.score import SCORES, Score
from pipelines.stages.select import SelectSettings
from pipelines.stages.self_instruct import AnswerTasks, AskInputs, GenerateInstructions, Sampling
from pipelines.stages.validate import Validate
from pipelines.teacher.config import TeacherConfig
from pipelines.teacher.weights import EMBEDDER_KEY


@dataclass(frozen=True)
class Config:
    name: str = field(default="self-instruct-convoforge", metadata={"help": "dataset name in the card"})
    n_instructions: int = field(default=32, metadata={
        "help": "instructions to accept before answering them", "range": "[1, 10000000]"})
    max_rounds: int = field(default=20, metadata={"help": "generation rounds at most", "range": "[1, 1000000]"})
    requests_per_round: int = field(default=8, metadata={"help": "generation prompts sent per round",
                                                         "range": "[1, 100000]"})
    seed_examples: int = field(default=6, metadata={"help": "seed tasks shown per prompt", "range": "[0, 64]"})
    machine_examples: int = field(default=2, metadata={"help": "accepted machine tasks shown per prompt",
                                                       "range": "[0, 64]"})
    new_per_request: int = field(default=4, metadata={"help": "tasks asked for per prompt", "range": "[1, 100]"})
    rouge_threshold: float = field(default=0.7, metadata={"help": "reject above this ROUGE-L F against the pool",
                                                          "range": "[0, 1]"})
    min_words: int = field(default=4, metadata={"help": "shortest instruction kept, in words", "range": "[1, 10000]"})
    max_words: int = field(default=150, metadata={"help": "longest instruction kept, in words", "range": "[1, 10000]"})
    seeds: str = field(default="", metadata={"help": "seed tasks JSONL (Self-Instruct format); empty = built in"})
    seed: int = field(default=0, metadata={"help": "seed for sampling in-context examples", "range": "[0, 4294967295]"})
    test_fraction: float = test_fraction_setting()
    gen_fraction: float = gen_fraction_setting()
    scores: bool = field(default=False, metadata={"help": "DEITA's complexity and quality of each row, with "
                                                          "rationales, and a reward, rated by the teacher"})
    select: SelectSettings = field(default_factory=SelectSettings)
    sampling: Sampling = field(default_factory=Sampling)
    teacher: TeacherConfig = field(default_factory=lambda: TeacherConfig(max_concurrency=16))
    embedder: TeacherConfig = embedded_teacher_setting(EMBEDDER_KEY)

    def cross_check(self) -> str | None:
        if self.select.enabled and not self.scores:
            return "select.enabled ranks rows by their deita_score: it needs scores=true"
        if self.min_words > self.max_words:
            return (f"min_words ({self.min_words}) must be at most max_words ({self.max_words}): "
                    "--set min_words or max_words")
        return None


def inputs(cfg: Config) -> Inputs:
    return Inputs(seeds=(cfg.seeds,) if cfg.seeds else (), built_in=() if cfg.seeds else ("data/seed_tasks.jsonl",))


def seeds_path(cfg: Config) -> str:
    return cfg.seeds or str(resources.files("pipelines.data").joinpath("seed_tasks.jsonl"))


def stages(cfg: Config) -> list[Stage]:
    tasks = load_seed_tasks(seeds_path(cfg))  # read now: a bad seed file stops the build before anything runs
    return [
        GenerateInstructions(
            seed_tasks=tuple((t["id"], t["instruction"]) for t in tasks), sampling=cfg.sampling,
            n_instructions=cfg.n_instructions, max_rounds=cfg.max_rounds, requests_per_round=cfg.requests_per_round,
            seed_examples=cfg.seed_examples, machine_examples=cfg.machine_examples,
            new_per_request=cfg.new_per_request, threshold=cfg.rouge_threshold, min_words=cfg.min_words,
            max_words=cfg.max_words, seed=cfg.seed),
        AskInputs(shots=input_shots(tasks), sampling=cfg.sampling),
        AnswerTasks(sampling=cfg.sampling),
        Validate(),
        ExactDedup(),
        *([Score()] if cfg.scores else []),
        *cfg.select.stages("deita_score"),
        ExportSFT(test_fraction=cfg.test_fraction, gen_fraction=cfg.gen_fraction,
                  extra_columns=("instruction", "input", "output",  # Alpaca's columns beside the messages
                                 *(SCORES if cfg.scores else ()))),
    ]


RECIPE = Recipe(
    name="self_instruct", summary="Alpaca-style instructions, inputs and outputs grown from seed tasks (Self-Instruct)",
    config=Config, stages=stages, card="self_instruct", roles=("teacher", "embedder"), inputs=inputs,
)
