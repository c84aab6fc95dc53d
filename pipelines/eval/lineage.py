"""Eval items a model was trained on are not evidence: find a model's training data through its lineage and remove
the items that overlap it (the project's n-gram rule, `pipelines.dedup.decontam`).

A `pipelines.train` output's `train_metrics.json` names the export it was trained on (`export`) and the model it
started from (`model`), which may itself be a trained output: the chain is followed to its root, and every train
split of every export on it (`data/train_*.parquet`) is read as a benchmark of training prompts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipelines.dedup.decontam import Benchmark, Contamination

NGRAM = 13


def training_exports(checkpoint: Path | None) -> tuple[list[Path], list[str]]:
    """(the exports on the model's lineage, notes on links that could not be followed)."""
    exports, notes, seen = [], [], set()
    while checkpoint is not None and checkpoint not in seen:
        seen.add(checkpoint)
        metrics = checkpoint / "train_metrics.json"
        if not metrics.is_file():
            break
        found = json.loads(metrics.read_text())
        if found.get("export"):
            export = Path(found["export"])
            (exports.append(export) if export.is_dir() else
             notes.append(f"{checkpoint.name} was trained on {export}, which is gone: not decontaminated against it"))
        else:
            notes.append(f"{checkpoint.name}'s train_metrics.json names no export (trained before lineage was kept)")
        parent = Path(str(found.get("model") or ""))
        checkpoint = parent if parent.is_dir() else None
    return exports, notes


def decontaminate(items: list[dict], prompts: list[str], exports: list[Path]) -> tuple[list[dict], dict]:
    """The items whose prompt overlaps no training prompt, and what was removed."""
    files = sorted({f for export in exports for f in (export / "data").glob("train_*.parquet")})
    if not files or not items:
        return items, {"training_files": len(files), "removed": 0}
    contamination = Contamination([Benchmark(f"{f.parent.parent.name}/{f.stem}", f) for f in files], NGRAM)
    reasons = contamination.match(prompts, np.arange(len(prompts)), len(prompts))
    kept = [item for item, reason in zip(items, reasons) if reason is None]
    removed = {item["id"]: reason for item, reason in zip(items, reasons) if reason is not None}
    return kept, {"training_files": len(files), "removed": len(removed), "removed_items": removed}
