"""Pictures of a run's distributions, drawn beside its card: `export/pictures/*.png`, linked from the card.

- scores: a histogram per score column of the export (`reward`, `complexity`, `quality`);
- selection: the cosine distance of kept and dropped rows to their nearest kept row (the `select` stage's summary);
- clusters: the sizes of SemDeDup's k-means clusters.
Nothing to draw, no pictures (and no matplotlib import).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

SCORE_COLUMNS = ("reward", "complexity", "quality")


def draw(export_dir: Path, summaries: dict) -> str:
    """Draw what the run has to show; the card's markdown for it ("" when nothing)."""
    files = sorted(export_dir.glob("data/*.parquet"))
    data = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed") if files else pl.DataFrame()
    scores = {c: data[c].drop_nulls().to_list() for c in SCORE_COLUMNS
              if c in data.columns and data[c].dtype.is_numeric() and data[c].drop_nulls().len()}
    selection = summaries.get("selection", {})
    clusters = summaries.get("semantic_dedup", {}).get("cluster_sizes") or []
    if not (scores or "bins" in selection or clusters):
        return ""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    folder = export_dir / "pictures"
    folder.mkdir(exist_ok=True)
    shown = []

    def save(fig, name: str, title: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / name, dpi=80)
        plt.close(fig)
        shown.append(f"![{title}](pictures/{name})")

    if scores:
        fig, axes = plt.subplots(1, len(scores), figsize=(4 * len(scores), 3), squeeze=False)
        for ax, (name, values) in zip(axes[0], scores.items()):
            ax.hist(values, bins=min(20, max(5, len(set(values)))), color="#4a7ab5")
            ax.set_title(f"{name} ({len(values)} rows)")
        save(fig, "scores.png", "score distributions of the exported rows")
    if "bins" in selection:
        edges = selection["bins"]
        fig, ax = plt.subplots(figsize=(6, 3))
        width = edges[1] - edges[0]
        ax.bar(edges[:-1], selection["kept_hist"], width=width, align="edge", alpha=0.7, label="kept")
        ax.bar(edges[:-1], selection["dropped_hist"], width=width, align="edge", alpha=0.5, label="dropped")
        ax.axvline(selection["min_distance"], color="black", linestyle="--", label="min_distance")
        ax.set_xlabel("cosine distance to the nearest kept row")
        ax.legend()
        save(fig, "selection.png", "distance of kept and dropped rows to their nearest kept row")
    if clusters:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.hist(clusters, bins=min(30, max(5, len(set(clusters)))), color="#6a9a58")
        ax.set_xlabel("rows per k-means cluster")
        ax.set_title(f"{len(clusters)} clusters")
        save(fig, "clusters.png", "sizes of the semantic-dedup clusters")
    return "## Distributions\n\n" + "\n\n".join(shown) + "\n"
