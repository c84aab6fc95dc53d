"""Export preference pairs shaped like HuggingFaceH4/ultrafeedback_binarized, with a card.

Splits `train_prefs`/`test_prefs` (every pair), `train_sft`/`test_sft` and `train_gen`/`test_gen` (one row per
prompt: its pair with the highest chosen score), all with the same columns: `prompt`, `prompt_id`, `chosen`,
`rejected`, `messages` (= chosen), `score_chosen`, `score_rejected`, plus `chosen_model`, `rejected_model`,
`completions` (every rated completion, so a user can binarize again) and `ordering_agreement` (the judge's, null for
pairs that came from a dataset). A pair's part (train or test) comes from a hash of its prompt_id, so one prompt
never lands in both; near-duplicate prompts that straddle train and test move to train (`separate_splits`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.stage import Context, Stage, split_drops
from pipelines.stages.labels import ReadsLabels, label_pairs
from pipelines.stages.export import part_of, separate_splits
from pipelines.teacher.guards import unit_hash
from schemas import PREFERENCE

PREF_SPLITS = ("train_prefs", "test_prefs", "train_sft", "test_sft", "train_gen", "test_gen")
COLUMNS = ("prompt", "prompt_id", "chosen", "rejected", "messages", "score_chosen", "score_rejected",
           "chosen_model", "rejected_model", "completions")
EXPORT_PREFS_SCHEMA = pa.schema([*(PREFERENCE.field(c) for c in COLUMNS),
                                 pa.field("ordering_agreement", pa.float64())])


def parts(prompt_ids: list[str], test_fraction: float) -> list[str]:
    """"train"/"test" per row from its prompt_id; with 4+ prompts and none in test, the one that hashes lowest
    goes there (`datasets` cannot load an empty split)."""
    out = [part_of(p, test_fraction) for p in prompt_ids]
    if "test" not in out and len(set(prompt_ids)) >= 4 and test_fraction > 0:
        lowest = min(prompt_ids, key=lambda p: unit_hash(p + ":test"))
        out = ["test" if p == lowest else s for p, s in zip(prompt_ids, out)]
    return out


@dataclass
class ExportPrefs(ReadsLabels, Stage):
    test_fraction: float = 0.05
    leakage_threshold: float = 0.8
    name = "export"
    requires = ("prompt", "prompt_id", "chosen", "rejected")
    provides = ("split",)

    def summary(self, counters: dict) -> dict:
        return {"leakage": self._leakage, **({"review": self._review} if self._review else {})}

    def run(self, batches, ctx: Context):
        frames = [b for b in batches if b.height]
        data = pl.concat(frames, how="diagonal_relaxed") if frames else pl.from_arrow(EXPORT_PREFS_SCHEMA.empty_table())
        if "ordering_agreement" not in data.columns:
            data = data.with_columns(pl.lit(None, dtype=pl.Float64).alias("ordering_agreement"))
        data, self._review = label_pairs(data, ctx.run_dir)
        data, reviewed_out = split_drops(data)
        split = parts(data["prompt_id"].to_list(), self.test_fraction)
        split, self._leakage = separate_splits(data["prompt"].fill_null(""), [f"{s}_prefs" for s in split],
                                               self.leakage_threshold, ctx)
        data = data.with_columns(pl.Series("split", [s.split("_")[0] for s in split], dtype=pl.String))
        out_dir = ctx.run_dir / "export"
        shutil.rmtree(out_dir, ignore_errors=True)
        (out_dir / "data").mkdir(parents=True)
        counts = {}
        for part in ("train", "test"):
            pairs = data.filter(pl.col("split") == part)
            best = pairs.sort("score_chosen", descending=True, nulls_last=True).unique("prompt_id", keep="first",
                                                                                       maintain_order=True)
            for kind, rows in (("prefs", pairs), ("sft", best), ("gen", best)):
                if rows.height:
                    name = f"{part}_{kind}"
                    table = pa.Table.from_pylist(rows.select(EXPORT_PREFS_SCHEMA.names).to_dicts(),
                                                 schema=EXPORT_PREFS_SCHEMA)
                    pq.write_table(table, out_dir / "data" / f"{name}-00000-of-00001.parquet")
                    counts[name] = table.num_rows
        yield data if reviewed_out is None else pl.concat([data, reviewed_out], how="diagonal_relaxed")
