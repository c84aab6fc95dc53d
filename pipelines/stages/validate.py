"""Validate: messages, source, meta -> id (and rows that break the conversation schema dropped with the reason).

`id` is sha256 of the canonical messages (schemas.conversation_id), so exact dedup downstream is unique(id).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pipelines.core.stage import Context, MapStage, with_drops
from schemas import check_conversation, conversation_id


@dataclass
class Validate(MapStage):
    name = "validate"
    requires = ("messages", "source", "meta")
    provides = ("id",)

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        ids, reasons = [], []
        for row in batch.select("messages", "source", "meta").iter_rows(named=True):
            messages = row["messages"] or []
            ids.append(conversation_id(messages))
            record = {"id": ids[-1], "messages": messages, "source": row["source"] or "", "meta": row["meta"] or ""}
            reason = check_conversation(record)
            reasons.append(reason)
        return with_drops(batch.with_columns(pl.Series("id", ids, dtype=pl.String)), reasons)
