"""Eval items a model was trained on are not evidence: find a model's training data through its lineage and remove
the items that overlap it (the project's n-gram rule, `pipelines.dedup.decontam`).

A `pipelines.train` output's `train_metrics.json` names the export it was trained on (`export`) and the model it
started from (`model`), which may itself be a trained output: the chain is followed to its root, and every train
split of every export on it (`data/train_*.parquet`) is read as a benchmark of training prompts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.dedup.decontam import Benchmark, Contamination
from pipelines.train.card import lineage

NGRAM = 13


def training_exports(checkpoint: Path | None) -> tuple[list[Path], list[str]]:
    """(the exports on the model's lineage, notes on links that could not be followed)."""
    exports, notes = [], []
    for run in lineage(checkpoint) if checkpoint is not None else []:
        name = Path(run["dir"]).name
        if not run.get("export"):
            notes.append(f"{name}'s train_metrics.json names no export (trained before lineage was kept)")
        elif Path(run["export"]).is_dir():
            exports.append(Path(run["export"]))
        else:
            notes.append(f"{name} was trained on {run['export']}, which is gone: not decontaminated against it")
    return exports, notes


def training_index(exports: list[Path]) -> tuple[Contamination | None, int]:
    """The n-gram index of every train split on the lineage (read once per eval), and how many files it holds."""
    files = sorted({f for export in exports for f in (export / "data").glob("train_*.parquet")})
    if not files:
        return None, 0
    return Contamination([Benchmark(f"{f.parent.parent.name}/{f.stem}", f) for f in files], NGRAM), len(files)


def decontaminate(items: list[dict], prompts: list[str], index: tuple[Contamination | None, int]
                  ) -> tuple[list[dict], dict]:
    """The items whose prompt overlaps no training prompt of `index` (`training_index`), and what was removed."""
    contamination, files = index
    if contamination is None or not items:
        return items, {"training_files": files, "removed": 0}
    reasons = contamination.match(prompts, np.arange(len(prompts)), len(prompts))
    kept = [item for item, reason in zip(items, reasons) if reason is None]
    removed = {item["id"]: reason for item, reason in zip(items, reasons) if reason is not None}
    return kept, {"training_files": files, "removed": len(removed), "removed_items": removed}
