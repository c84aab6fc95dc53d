"""Clean a corpus, with no teacher: ingest (redacting) -> dedup_exact -> decontaminate -> dedup_near
-> [embed -> semantic_dedup] -> export.

`python -m pipelines.build dedup --set sources=a.jsonl,b.parquet` reads the sources as the `ingest` recipe does,
drops exact duplicates (same content hash), records that overlap benchmark prompts (`--set
benchmarks=gsm8k=test.jsonl,alpaca_eval.json`; none by default) and near-duplicates (MinHash LSH), and exports the
survivors to `runs/dedup/export/data/train-*.parquet`. With `--set index=DIR` the near-duplicate index persists: a
later run drops what any earlier run kept and adds its own survivors. `dedup/clusters.parquet` shows what was merged.
With `--set semantic=true`, SemDeDup then drops paraphrases MinHash cannot see (embeddings from the embedded
multilingual-e5-small, or `embedder.base_url`); it has no persistent index, so a refresh dedups semantically within
the new data only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.core.recipe import Inputs, Recipe, Refresh
from pipelines.core.stage import Stage
from pipelines.recipes._settings import benchmarks_setting, embedded_teacher_setting, index_setting
from pipelines.recipes.ingest import card_values as rows_card_values
from pipelines.stages.dedup import Decontaminate, ExactDedup, NearDedup
from pipelines.stages.export import ExportRows
from pipelines.stages.ingest import Ingest
from pipelines.stages.redact import redact_setting
from pipelines.stages.select import Embed, SemanticDedup
from pipelines.teacher.config import TeacherConfig
from pipelines.teacher.weights import EMBEDDER_KEY


@dataclass(frozen=True)
class Config:
    name: str = field(default="deduplicated-convoforge", metadata={"help": "dataset name in the card"})
    sources: tuple[str, ...] = field(default=(), metadata={"help": "PATH[?format=NAME&weight=W&max_rows=N], ..."})
    kind: str = field(default="conversation", metadata={"help": "conversation, preference or text",
                                                        "choices": ("conversation", "preference", "text")})
    redact: str = redact_setting()
    threshold: float = field(default=0.8, metadata={
        "help": "estimated Jaccard at which two rows are duplicates", "range": "(0, 1]"})
    compare: str = field(default="conversation", metadata={"help": "conversation, or prompt (first user turn)",
                                                           "choices": ("conversation", "prompt")})
    ngram: int = field(default=5, metadata={"help": "words per shingle", "range": "[1, 64]"})
    num_perm: int = field(default=128, metadata={"help": "MinHash permutations", "range": "[16, 8192]"})
    bands: int = field(default=16, metadata={"help": "LSH bands (bands x rows <= num_perm)", "range": "[1, 8192]"})
    rows: int = field(default=8, metadata={"help": "signature rows per band", "range": "[1, 8192]"})
    seed: int = field(default=1, metadata={"help": "seed of the MinHash permutations", "range": "[0, 4294967295]"})
    index: str = index_setting()
    benchmarks: tuple[str, ...] = benchmarks_setting()
    decontamination_ngram: int = field(default=13, metadata={
        "help": "words per n-gram for decontamination", "range": "[1, 200]"})
    semantic: bool = field(default=False, metadata={"help": "also drop semantic duplicates (SemDeDup on embeddings "
                                                            "from the embedder role)"})
    semantic_eps: float = field(default=0.05, metadata={"help": "semantic duplicates: cosine above 1 - eps",
                                                        "range": "(0, 1)"})
    semantic_clusters: int = field(default=0, metadata={"help": "k-means clusters (0: one per 1,000 rows)",
                                                        "range": "[0, 10000000]"})
    embedder: TeacherConfig = embedded_teacher_setting(EMBEDDER_KEY)

    def cross_check(self) -> str | None:
        if self.bands * self.rows > self.num_perm:
            return (f"bands x rows ({self.bands} x {self.rows} = {self.bands * self.rows}) must be at most num_perm "
                    f"({self.num_perm}): --set bands, rows or num_perm")
        if self.semantic and self.kind == "preference":
            return "semantic=true embeds conversations or texts, not preference pairs: --set kind or semantic=false"
        return None


def stages(cfg: Config) -> list[Stage]:
    return [
        Ingest(sources=cfg.sources, kind=cfg.kind, redact=cfg.redact),
        ExactDedup(),
        *([Decontaminate(benchmarks=cfg.benchmarks, ngram=cfg.decontamination_ngram)] if cfg.benchmarks else []),
        NearDedup(threshold=cfg.threshold, compare=cfg.compare, num_perm=cfg.num_perm, bands=cfg.bands,
                  rows=cfg.rows, ngram=cfg.ngram, seed=cfg.seed, index=cfg.index),
        *([Embed(compare=cfg.compare), SemanticDedup(eps=cfg.semantic_eps, clusters=cfg.semantic_clusters)]
          if cfg.semantic else []),
        ExportRows(kind=cfg.kind),
    ]


def inputs(cfg: Config) -> Inputs:
    return Inputs(sources=cfg.sources, benchmarks=cfg.benchmarks)


RECIPE = Recipe(
    name="dedup", summary="clean a corpus with no teacher: exact, benchmark and near-duplicate removal",
    config=Config, stages=stages, card="ingest", roles=("embedder",), inputs=inputs, card_values=rows_card_values,
    refresh=Refresh(),
)
