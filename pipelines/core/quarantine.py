"""The run's quarantine: every row a stage dropped, gathered into `runs/<recipe>/quarantine.parquet`
(schemas.QUARANTINE) when a build ends, with where each row came from and the row as read."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from pipelines.core.files import replace_with
from pipelines.core.stage import DROP, QUARANTINE_ONLY
from schemas import QUARANTINE


def write_quarantine(run_dir: Path) -> tuple[Path, int]:
    """Gather every stage's dropped rows into `run_dir/quarantine.parquet` (schemas.QUARANTINE).

    `locator` and `raw` come from the row when the stage set them (ingest). Otherwise the locator is where the row
    came from: the input's `file.jsonl:17`, kept in `meta` through every stage, or for a generated row the stage
    and its prompt (`03_dialogue:<prompt id>`); and `raw` is the row as JSON (its `meta` as an object).
    """
    count = 0

    def write(tmp: Path) -> None:  # a batch at a time: a run that dropped millions of rows holds 8,192 of them
        nonlocal count
        with pq.ParquetWriter(tmp, QUARANTINE) as writer:
            for dropped in sorted(run_dir.glob("*/dropped.parquet")):
                for batch in pq.ParquetFile(dropped).iter_batches(batch_size=8192):
                    rows = pl.from_arrow(batch)
                    table = rows.select(
                        pl.lit(dropped.parent.name).alias("stage"),
                        (pl.col("source") if "source" in rows.columns else pl.lit("")).cast(pl.String).alias("source"),
                        _locator(rows, dropped.parent.name).alias("locator"),
                        pl.col(DROP).alias("reason"),
                        (pl.col("raw") if "raw" in rows.columns else _row_json(rows)).cast(pl.String).alias("raw"),
                    ).to_arrow().cast(QUARANTINE)
                    writer.write_table(table)
                    count += table.num_rows

    return replace_with(run_dir / "quarantine.parquet", write), count


def _meta_key(rows: pl.DataFrame, key: str) -> pl.Expr:
    if "meta" not in rows.columns:
        return pl.lit(None, pl.String)
    return pl.col("meta").str.json_path_match(f"$.{key}")


def _locator(rows: pl.DataFrame, stage: str) -> pl.Expr:
    """The input's `file:line` when the row has one, else `<stage>:<prompt id or row id>`."""
    own = [pl.col("locator").cast(pl.String)] if "locator" in rows.columns else []
    prompt = [pl.col(c).cast(pl.String) for c in ("prompt_id", "id") if c in rows.columns]
    generated = pl.concat_str(pl.lit(f"{stage}:"), pl.coalesce(
        _meta_key(rows, "seed_id"), _meta_key(rows, "instruction_id"), *prompt, pl.lit("?")))
    return pl.coalesce(*own, _meta_key(rows, "locator"), generated)


def _row_json(rows: pl.DataFrame) -> pl.Expr:
    """The row as one JSON object; `meta` (already JSON text) is spliced in as an object, not encoded twice."""
    data = [c for c in rows.columns if c not in (DROP, "meta", *QUARANTINE_ONLY)]
    head = pl.struct(data).struct.json_encode() if data else pl.lit("{}")
    if "meta" not in rows.columns:
        return head
    meta = pl.col("meta").fill_null("null")
    return pl.concat_str(head.str.head(-1), pl.lit(',"meta":' if data else '"meta":'), meta, pl.lit("}"))
