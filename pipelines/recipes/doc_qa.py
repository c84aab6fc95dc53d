"""Grounded question-answer pairs from your documents (RAG-style SFT data), as SFT splits.

ingest (texts) -> chunk (passages of at most `max_chars`) -> dedup_exact -> [decontaminate] -> question (one
question each passage answers) -> answer (from the passage alone, kept when the passage supports it) -> validate
-> export

Sources are any text files ingest reads as texts (`.txt`, JSONL with `text`, Markdown, ...); by default 12
project-written passages. Each exported row's user turn holds the document and the question, its assistant turn the
answer; `support` is the share of the answer's content words found in the document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

from pipelines.core.recipe import Inputs, Recipe
from pipelines.core.stage import Stage
from pipelines.recipes._settings import (benchmarks_setting, embedded_teacher_setting, gen_fraction_setting,
                                         test_fraction_setting)
from pipelines.stages.dedup import Decontaminate, ExactDedup
from pipelines.stages.doc_qa import AnswerFromText, AskQuestion, Chunk, DocQASampling
from pipelines.stages.export import ExportSFT
from pipelines.stages.ingest import Ingest
from pipelines.stages.validate import Validate
from pipelines.teacher.config import TeacherConfig

PASSAGES = "data/doc_passages.jsonl"


@dataclass(frozen=True)
class Config:
    name: str = field(default="doc-qa-convoforge", metadata={"help": "dataset name in the card"})
    sources: tuple[str, ...] = field(default=(), metadata={
        "help": "text files, one passage per record (default: 12 shipped passages); PATH?max_rows=N takes N"})
    max_chars: int = field(default=2000, metadata={
        "help": "longest passage asked about; a longer document is cut at paragraph and sentence ends",
        "range": "[200, 100000]"})
    min_support: float = field(default=0.6, metadata={
        "help": "share of an answer's content words that must occur in its passage", "range": "[0, 1]"})
    benchmarks: tuple[str, ...] = benchmarks_setting()
    test_fraction: float = test_fraction_setting()
    gen_fraction: float = gen_fraction_setting()
    sampling: DocQASampling = field(default_factory=DocQASampling)
    teacher: TeacherConfig = embedded_teacher_setting("qwen2.5-coder-1.5b")


def inputs(cfg: Config) -> Inputs:
    return Inputs(sources=cfg.sources, benchmarks=cfg.benchmarks, built_in=() if cfg.sources else (PASSAGES,))


def stages(cfg: Config) -> list[Stage]:
    shipped = str(resources.files("pipelines").joinpath(PASSAGES))
    return [
        Ingest(sources=cfg.sources or (shipped,), kind="text"),
        Chunk(max_chars=cfg.max_chars),
        ExactDedup(),
        *([Decontaminate(benchmarks=cfg.benchmarks)] if cfg.benchmarks else []),
        AskQuestion(sampling=cfg.sampling),
        AnswerFromText(sampling=cfg.sampling, min_support=cfg.min_support),
        Validate(),
        ExportSFT(test_fraction=cfg.test_fraction, gen_fraction=cfg.gen_fraction, extra_columns=("support",)),
    ]


def card_values(cfg: Config, run) -> dict:
    return {"document_source": ", ".join(cfg.sources) or f"12 project-written passages (`{PASSAGES}`)"}


RECIPE = Recipe(
    name="doc_qa", summary="grounded question-answer pairs from your documents: a question each passage answers, "
                           "answered from the passage alone, kept when the passage supports it",
    config=Config, stages=stages, card="doc_qa", roles=("teacher",), inputs=inputs, card_values=card_values,
)
