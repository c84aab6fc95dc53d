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

from pipelines.core.recipe import Inputs, Recipe
from pipelines.core.stage import Stage
from pipelines.release import preference_card
from pipelines.stages.export import ExportRows
from pipelines.stages.export_prefs import ExportPrefs
from pipelines.stages.ingest import Ingest
from pipelines.stages.redact import redact_setting
from schemas import ARROW_SCHEMAS


@dataclass(frozen=True)
class Config:
    name: str = field(default="ingested-convoforge", metadata={"help": "dataset name in the card"})
    sources: tuple[str, ...] = field(default=(), metadata={"help": "PATH[?format=NAME&weight=W&max_rows=N], ..."})
    kind: str = field(default="conversation", metadata={"help": "conversation, preference or text",
                                                        "choices": ("conversation", "preference", "text")})
    redact: str = redact_setting()


def stages(cfg: Config) -> list[Stage]:
    export = ExportPrefs() if cfg.kind == "preference" else ExportRows(kind=cfg.kind)
    return [
        Ingest(sources=cfg.sources, kind=cfg.kind, redact=cfg.redact),
        export,
    ]


def inputs(cfg: Config) -> Inputs:
    return Inputs(sources=cfg.sources)


def card_values(cfg: Config, run) -> dict:
    """The schema of the rows; for preference pairs, what the card of the ultrafeedback recipe shows of them."""
    if cfg.kind == "preference":
        return preference_card.values(run, None, "listwise")
    return {"kind": cfg.kind, "columns": ", ".join(ARROW_SCHEMAS[cfg.kind].names)}


RECIPE = Recipe(
    name="ingest", summary="normalise files of ~20 formats into one schema, quarantining bad records",
    config=Config, stages=stages, card="ingest", inputs=inputs, card_values=card_values,
)
