"""Magpie (Xu et al., 2024): instruction data with no seed prompts, exported like HuggingFaceH4/ultrachat_200k.

seeds -> dialogue (query from the pre-query text, then the answer; `turns` exchanges) -> validate -> dedup_exact
-> dedup_near (on the first query) -> tags (Magpie's tags and a reward, asked of the judge) -> export

The default teacher is the embedded Qwen2.5-Coder-1.5B-Instruct, whose own chat template gives the pre-query text:
its queries lean to programming, as a coder model's would (a system prompt steers the domain: `system_prompt`).
With a real endpoint give its template (`chat_template=PATH`, a .jinja file or tokenizer_config.json) or the text
itself (`pre_query=TEXT`, `stop=TOKEN`); the endpoint must serve raw completions (/v1/completions: llama.cpp's
server, vLLM).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import polars as pl

from pipelines.core.recipe import Inputs, Recipe
from pipelines.core.stage import Stage
from pipelines.recipes._settings import (embedded_teacher_setting, gen_fraction_setting, index_setting,
                                        test_fraction_setting, threshold_setting)
from pipelines.stages.dedup import ExactDedup, NearDedup
from pipelines.stages.export import ExportSFT
from pipelines.stages.select import SelectSettings
from pipelines.stages.magpie import TAGS, MagpieDialogue, MagpieSampling, MagpieSeeds, TagQueries, Template
from pipelines.stages.validate import Validate
from pipelines.teacher.config import TeacherConfig
from pipelines.teacher.weights import EMBEDDER_KEY

DEFAULT_MAGPIE_TEACHER = "qwen2.5-coder-1.5b"


@dataclass(frozen=True)
class Config:
    name: str = field(default="magpie-convoforge", metadata={"help": "dataset name in the card"})
    n_queries: int = field(default=48, metadata={"help": "dialogues to start", "range": "[1, 100000000]"})
    turns: int = field(default=1, metadata={"help": "exchanges per dialogue (above 1: Magpie-MT)", "range": "[1, 16]"})
    retries: int = field(default=2, metadata={"help": "re-asks of a refused query", "range": "[0, 10]"})
    min_words: int = field(default=4, metadata={"help": "shortest query kept, in words", "range": "[1, 1000]"})
    languages: tuple[str, ...] = field(default=("en",), metadata={
        "help": "ISO 639-1 codes of the queries kept (langid); empty keeps every language"})
    system_prompt: str = field(default="", metadata={"help": "system prompt rendered before the query (steers "
                                                             "the domain); empty: the template's default"})
    chat_template: str = field(default="", metadata={
        "help": "the teacher's chat template: a .jinja file or tokenizer_config.json (default: the embedded "
                "model's own)"})
    pre_query: str = field(default="", metadata={"help": "the pre-query text as it is (overrides the template "
                                                         "for the first turn)"})
    stop: str = field(default="", metadata={"help": "the template's end-of-turn token (default: from the template)"})
    tags: bool = field(default=True, metadata={"help": "ask the judge for Magpie's tags and a reward of each row"})
    threshold: float = threshold_setting(" on the first query")
    index: str = index_setting(" of queries")
    seed: int = field(default=0, metadata={"help": "seed of the query samples", "range": "[0, 4294967295]"})
    test_fraction: float = test_fraction_setting()
    gen_fraction: float = gen_fraction_setting()
    sampling: MagpieSampling = field(default_factory=MagpieSampling)
    teacher: TeacherConfig = embedded_teacher_setting(DEFAULT_MAGPIE_TEACHER)
    # the same config as the teacher: one embedded server writes, answers and tags (set judge.* for another model)
    select: SelectSettings = field(default_factory=SelectSettings)
    embedder: TeacherConfig = embedded_teacher_setting(EMBEDDER_KEY)
    judge: TeacherConfig = embedded_teacher_setting(DEFAULT_MAGPIE_TEACHER)

    def cross_check(self) -> str | None:
        if self.select.enabled and not self.tags:
            return "select.enabled ranks rows by the judge's reward: it needs tags=true"
        return None


def template(cfg: Config) -> Template:
    embedded = "" if cfg.teacher.base_url or cfg.chat_template else cfg.teacher.embedded.model
    return Template(pre_query=cfg.pre_query, stop=cfg.stop, chat_template=cfg.chat_template,
                    embedded_model=embedded, system=cfg.system_prompt)


def stages(cfg: Config) -> list[Stage]:
    return [
        MagpieSeeds(n_queries=cfg.n_queries, seed=cfg.seed),
        MagpieDialogue(template=template(cfg), sampling=cfg.sampling, turns=cfg.turns, retries=cfg.retries,
                       min_words=cfg.min_words, languages=cfg.languages),
        Validate(),
        ExactDedup(),
        NearDedup(threshold=cfg.threshold, index=cfg.index, compare="prompt"),
        *([TagQueries()] if cfg.tags else []),
        *cfg.select.stages("reward"),
        ExportSFT(test_fraction=cfg.test_fraction, gen_fraction=cfg.gen_fraction, leakage_threshold=cfg.threshold,
                  extra_columns=(*TAGS, "reward") if cfg.tags else ()),
    ]


def tag_table(export_dir) -> str:
    """Markdown rows: each tag's values with how many exported rows carry them, and the reward's distribution."""
    files = sorted(export_dir.glob("data/*.parquet"))
    data = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed") if files else pl.DataFrame()
    if not data.height or "reward" not in data.columns:
        return "| - | not tagged (`tags=false`) |"
    rows = [f"| {tag} | " + ", ".join(f"{value}: {n}" for value, n in sorted(
        Counter(data[tag].fill_null("unreadable").to_list()).items())) + " |" for tag in TAGS]
    rewards = data["reward"].drop_nulls()
    spread = Counter(int(r) for r in rewards.to_list())
    rows.append(f"| reward (1-9) | mean {rewards.mean():.2f} over {len(rewards)} rows; " if len(rewards) else
                "| reward (1-9) | none readable; ")
    rows[-1] += ", ".join(f"{k}: {n}" for k, n in sorted(spread.items())) + " |"
    return "\n".join(rows)


def card_values(cfg: Config, run) -> dict:
    shown = template(cfg)
    return {"pre_query": shown.prefix([]), "stop": shown.end_of_turn(), "tag_table": tag_table(run.export_dir),
            "languages": ", ".join(cfg.languages) or "any", "system_prompt": cfg.system_prompt or "none"}


RECIPE = Recipe(
    name="magpie", summary="queries written by an aligned model from its own chat template, then answered (Magpie)",
    config=Config, stages=stages, card="magpie", roles=("teacher", "judge", "embedder"),
    inputs=lambda cfg: Inputs(),
    card_values=card_values,
)
