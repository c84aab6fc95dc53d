"""Normalise files into one schema, with no teacher: ingest (redacting) -> export.

`python -m pipelines.build ingest --set sources=a.jsonl,b.parquet?max_rows=1000` reads every source (format
auto-detected, or `?format=NAME`), validates each record, quarantines the bad ones with their reason in
`runs/ingest/quarantine.parquet`, redacts personal data and secrets in chat logs, and exports the rows to
`runs/ingest/export/data/train-*.parquet` in the `kind`'s schema (`schemas/`). Preference pairs (hh-rlhf, HelpSteer,
OpenAssistant, UltraFeedback, TRL files) are exported like the `ultrafeedback` recipe's: ultrafeedback_binarized
splits and columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from pipelines.stage import Stage
from pipelines.stages.export import ExportRows
from pipelines.stages.export_prefs import ExportPrefs
from pipelines.stages.ingest import Ingest
from pipelines.stages.redact import redact_setting


@dataclass(frozen=True)
class Config:
    recipe: ClassVar[str] = "ingest"
    name: str = field(default="ingested-convoforge", metadata={"help": "dataset name in the card"})
    sources: tuple[str, ...] = field(default=(), metadata={"help": "PATH[?format=NAME&weight=W&max_rows=N], ..."})
    kind: str = field(default="conversation", metadata={"help": "conversation, preference or text",
                                                        "choices": ("conversation", "preference", "text")})
    redact: str = redact_setting()


def stages(cfg: Config) -> list[Stage]:
    export = ExportPrefs(card="ingest") if cfg.kind == "preference" else ExportRows(kind=cfg.kind)
    return [
        Ingest(sources=cfg.sources, kind=cfg.kind, redact=cfg.redact),
        export,
    ]
