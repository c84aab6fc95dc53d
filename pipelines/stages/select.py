"""Embeddings and score-first diverse selection, for any recipe.

Embed:  messages -> embedding (the first user turn, or the whole conversation, embedded by the `embedder` role:
        `/v1/embeddings` of any OpenAI-compatible endpoint, by default the embedded multilingual-e5-small); stored as
        an Arrow fixed-size list beside the row, cached per text in requests.sqlite.
Select: embedding, <score> -> the rows kept by `pipelines.dedup.diverse.select_diverse`: best `score` first (null
        scores last, ties by prompt), each at cosine distance >= `min_distance` from every row kept before it, until
        `keep` rows (or `share` of them) are kept. The others are dropped as `too_close: cosine 0.97 to <prompt_id>`
        or `not_selected: ...`. Its summary holds the distances of kept and dropped rows to their nearest kept row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from pipelines.core.stage import Context, MapStage, Stage, with_drops
from pipelines.dedup.diverse import KEPT, TOO_CLOSE, select_diverse, semantic_clusters, semantic_dedup
from pipelines.stages.dedup import COMPARE, compare_text
from pipelines.teacher.stage import Asks
from schemas import prompt_id


@dataclass
class Embed(Asks, MapStage):
    """Not a `TeacherStage`: it asks `/v1/embeddings` for vectors (`embed_many`), not chat answers."""

    compare: str = "prompt"
    name = "embed"
    requires = ()  # messages, or text: `compare_text` embeds either
    provides = ("embedding",)
    teacher_role = "embedder"
    batch_size = 1024

    def __post_init__(self):
        if self.compare not in COMPARE:
            raise ValueError(f"embed compare={self.compare!r}: one of {', '.join(COMPARE)}")

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        texts = compare_text(batch, self.compare).to_list()
        vectors, errors = self.client(ctx).embed_many(texts, desc=self.name)
        if not vectors.shape[1]:  # no text of the batch was embedded: every row drops with its error
            vectors = np.zeros((len(texts), 1), np.float32)
        column = pl.Series("embedding", vectors, dtype=pl.Array(pl.Float32, vectors.shape[1]))
        return with_drops(batch.with_columns(column), [f"embedding_failed: {e}" if e else None for e in errors])


@dataclass
class Select(Stage):
    score: str = "reward"
    keep: int = 0  # rows to keep; 0: `share` of them
    share: float = 1.0
    min_distance: float = 0.1
    name = "select"
    requires = ("embedding", "messages")

    def __post_init__(self):
        self.requires = ("embedding", "messages", self.score)
        self._summary: dict = {}

    def summary(self, counters: dict) -> dict:
        return {"selection": self._summary}

    def run(self, batches, ctx: Context):
        if (data := gathered(batches)) is None:
            return
        vectors = unit_rows(data)
        ids = [prompt_id(t) for t in compare_text(data, "prompt").to_list()]
        order = best_first(data[self.score], ids)
        keep = self.keep or math.ceil(self.share * data.height)
        picked = select_diverse(vectors, order, keep, self.min_distance)
        reasons = []
        for i in range(data.height):
            if picked.status[i] == KEPT:
                reasons.append(None)
            elif picked.status[i] == TOO_CLOSE:
                reasons.append(f"too_close: cosine {picked.cosine[i]:.3f} to {ids[picked.nearest[i]]} "
                               f"(min_distance {self.min_distance})")
            else:
                reasons.append(f"not_selected: below the {keep} rows kept by {self.score}")
        self._summary = self._distances(vectors, picked, keep)
        ctx.count("selected", int((picked.status == KEPT).sum()))
        yield with_drops(data, reasons)

    def _distances(self, vectors: np.ndarray, picked, keep: int) -> dict:
        """Histograms (20 bins over cosine distance 0..1) of each row's distance to its nearest other kept row, for
        kept and dropped rows, from a sample of at most 20,000 rows against at most 50,000 kept ones."""
        kept = picked.kept
        summary = {"keep": keep, "kept": int(len(kept)), "min_distance": self.min_distance}
        if len(kept) < 2:
            return summary
        rng = np.random.default_rng(0)
        sample = rng.choice(len(vectors), size=min(len(vectors), 20_000), replace=False)
        reference = kept if len(kept) <= 50_000 else np.sort(rng.choice(kept, 50_000, replace=False))
        sims = vectors[sample] @ vectors[reference].T
        at = np.minimum(np.searchsorted(reference, sample), len(reference) - 1)
        itself = np.flatnonzero(reference[at] == sample)
        sims[itself, at[itself]] = -1.0  # a kept row's nearest kept row is another one
        nearest = 1.0 - sims.max(axis=1)
        is_kept = picked.status[sample] == KEPT
        edges = np.linspace(0.0, 1.0, 21)
        return {**summary, "bins": np.round(edges, 2).tolist(),
                "kept_hist": np.histogram(nearest[is_kept], edges)[0].tolist(),
                "dropped_hist": np.histogram(nearest[~is_kept], edges)[0].tolist()}


@dataclass
class SemanticDedup(Stage):
    """SemDeDup (Abbas et al., 2023) on the `embedding` column: k-means into `clusters` (0: one per 1,000 rows),
    then in each cluster a row whose cosine to an earlier kept row of its cluster is above 1 - `eps` is dropped as
    `semantic_duplicate: of <id> (cos 0.97)`. The row kept is the first in input order, or the best by `score`."""

    eps: float = 0.05
    clusters: int = 0
    score: str = ""
    seed: int = 0
    name = "semantic_dedup"
    requires = ("embedding",)

    def __post_init__(self):
        self._summary: dict = {}

    def summary(self, counters: dict) -> dict:
        return {"semantic_dedup": self._summary}

    def run(self, batches, ctx: Context):
        if (data := gathered(batches)) is None:
            return
        vectors = unit_rows(data)
        k = self.clusters or math.ceil(data.height / 1000)
        labels = semantic_clusters(vectors, k, self.seed)
        order = best_first(data[self.score], range(data.height)) if self.score else np.arange(data.height)
        found = semantic_dedup(vectors, order, labels, self.eps)
        ids = data["id"].to_list() if "id" in data.columns else [prompt_id(t) for t in
                                                                  compare_text(data, "prompt").to_list()]
        reasons = [None if found.status[i] == KEPT else
                   f"semantic_duplicate: of {ids[found.nearest[i]]} (cos {found.cosine[i]:.3f})"
                   for i in range(data.height)]
        sizes = np.bincount(labels)
        self._summary = {"eps": self.eps, "clusters": int(len(sizes)), "dropped": int(sum(r is not None
                                                                                          for r in reasons)),
                         "cluster_sizes": np.sort(sizes)[::-1].tolist()[:1000]}
        yield with_drops(data, reasons)


def gathered(batches) -> pl.DataFrame | None:
    """Every row of the input at once (selection and SemDeDup compare all rows), or None when there are none."""
    frames = [b for b in batches if b.height]
    return pl.concat(frames, how="diagonal_relaxed") if frames else None


def best_first(scores: pl.Series, ties) -> np.ndarray:
    """Row positions by score, highest first, null scores last, equal scores by `ties` (a sort key per row)."""
    values = scores.cast(pl.Float64).fill_nan(None).to_list()
    ties = list(ties)
    return np.array(sorted(range(len(values)), key=lambda i: (values[i] is None, -(values[i] or 0.0), ties[i])),
                    dtype=np.int64)


def unit_rows(data: pl.DataFrame) -> np.ndarray:
    vectors = data["embedding"].to_numpy().astype(np.float32, copy=False)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class SelectSettings:
    """A recipe's `select.*` settings: off by default; on, the recipe embeds and selects before it exports."""

    enabled: bool = field(default=False, metadata={"help": "keep only the best, most varied rows (embedded by the "
                                                           "embedder role)"})
    keep: int = field(default=0, metadata={"help": "rows to keep (0: `share` of them)", "range": "[0, 1000000000]"})
    share: float = field(default=1.0, metadata={"help": "share of rows to keep when keep=0", "range": "(0, 1]"})
    min_distance: float = field(default=0.1, metadata={"help": "cosine distance a kept row keeps from every better "
                                                               "kept row", "range": "[0, 2]"})
    compare: str = field(default="prompt", metadata={"help": "what is embedded: the prompt or the conversation",
                                                     "choices": COMPARE})

    def stages(self, score: str) -> list[Stage]:
        if not self.enabled:
            return []
        return [Embed(compare=self.compare),
                Select(score=score, keep=self.keep, share=self.share, min_distance=self.min_distance)]
