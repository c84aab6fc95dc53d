"""Orca-style explanation tuning (Mukherjee et al., 2023; OpenOrca): SFT data whose answers explain their reasoning.

prompts -> answer -> validate -> dedup_exact -> dedup_near -> export

`python -m pipelines.build orca` answers the project's 48 FLAN-like prompts (`pipelines/data/orca_prompts.jsonl`)
under one of 12 explanation-seeking system messages each; `--set sources=flan.jsonl,gsm8k.jsonl` takes the first user
turn of each record of any format `Ingest` reads instead (`n_prompts` of them, sampled by hash). Rows are
`[system, user, assistant]`, exported like HuggingFaceH4/ultrachat_200k (`prompt` is the user turn).

The defaults are sized so the embedded SmolLM2-135M teacher finishes in a few minutes on 2 CPU cores; with a real
teacher raise `n_prompts` and `sampling.max_tokens` (Orca's answers run to several hundred tokens).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from pipelines.core.recipe import Inputs, Recipe, Refresh
from pipelines.core.stage import Stage
from pipelines.recipes._settings import gen_fraction_setting, index_setting, test_fraction_setting, threshold_setting
from pipelines.stages.dedup import ExactDedup, NearDedup
from pipelines.stages.export import ExportSFT
from pipelines.stages.orca import DEFAULT_PROMPTS, AnswerSampling, ExplainAnswers, SeedOrca, system_messages
from pipelines.stages.redact import redact_setting
from pipelines.stages.validate import Validate
from pipelines.stages.reasoning import CheckAnswers
from pipelines.teacher.config import TeacherConfig


@dataclass(frozen=True)
class Config:
    name: str = field(default="orca-convoforge", metadata={"help": "dataset name in the card"})
    sources: tuple[str, ...] = field(default=(), metadata={
        "help": "instruction data, PATH[?format=NAME&weight=W&max_rows=N], ...; empty = the project's 48 prompts"})
    redact: str = redact_setting()
    n_prompts: int = field(default=48, metadata={
        "help": "prompts answered, at most, sampled by hash (0 = all)", "range": "[0, 10000000]"})
    seed: int = field(default=0, metadata={
        "help": "seed of the prompt sample and the system-message draw", "range": "[0, 4294967295]"})
    retries: int = field(default=1, metadata={"help": "re-asks of an answer that fails a guard", "range": "[0, 10]"})
    keep_truncated: bool = field(default=False, metadata={
        "help": "keep answers cut at max_tokens, trimmed to their last full sentence (default: drop them)"})
    verify: bool = field(default=False, metadata={
        "help": "drop answers whose final answer differs from the prompt's reference (#### N, \\boxed{}, a letter)"})
    threshold: float = threshold_setting()
    index: str = index_setting()
    test_fraction: float = test_fraction_setting()
    gen_fraction: float = gen_fraction_setting()
    sampling: AnswerSampling = field(default_factory=AnswerSampling)
    teacher: TeacherConfig = field(default_factory=lambda: TeacherConfig(max_concurrency=16))


def inputs(cfg: Config) -> Inputs:
    return Inputs(sources=cfg.sources, built_in=() if cfg.sources else (f"data/{DEFAULT_PROMPTS}",))


def card_values(cfg: Config, run) -> dict:
    """The system messages with how often each was used in the export, and where the prompts came from."""
    return {"system_messages": usage_table(run.export_dir),
            "prompt_sources": ", ".join(cfg.sources) or f"the project's 48 prompts (`pipelines/data/{DEFAULT_PROMPTS}`)"}


def usage_table(export_dir: Path) -> str:
    """Markdown rows: each system message, the kinds it suits, how many exported rows use it, its text."""
    used = Counter()
    for path in sorted(export_dir.glob("data/*_sft-*.parquet")) + sorted(export_dir.glob("data/*_gen-*.parquet")):
        used.update(m[0]["content"] for m in pl.read_parquet(path, columns=["messages"])["messages"].to_list()
                    if m and m[0]["role"] == "system")
    return "\n".join(f"| {m['id']} | {m['name']} | {', '.join(m['suits'])} | {used.get(m['text'], 0)} | "
                     f"{m['text']} |" for m in system_messages())


def stages(cfg: Config) -> list[Stage]:
    return [
        SeedOrca(sources=cfg.sources, n_prompts=cfg.n_prompts, seed=cfg.seed, redact=cfg.redact),
        ExplainAnswers(sampling=cfg.sampling, retries=cfg.retries, keep_truncated=cfg.keep_truncated),
        *([CheckAnswers()] if cfg.verify else []),
        Validate(),
        ExactDedup(),
        NearDedup(threshold=cfg.threshold, index=cfg.index),
        ExportSFT(test_fraction=cfg.test_fraction, gen_fraction=cfg.gen_fraction, leakage_threshold=cfg.threshold),
    ]


RECIPE = Recipe(
    name="orca", summary="explanation tuning: answers that explain their reasoning, under Orca system messages",
    config=Config, stages=stages, card="orca", roles=("teacher",), inputs=inputs, card_values=card_values,
    refresh=Refresh(),
)
