"""Preference pairs that people labelled, from the three places they live:

- a run dir with `labels.sqlite` (the review app's decisions on the run's pairs: `chosen_better` and
  `rejected_better` count; `tie` and `both_bad` are counted and left out);
- an export dir with preference splits (`*_prefs-*.parquet`, or `train`/`test` with chosen/rejected), whose
  `chosen` a person preferred (an ingested hh-rlhf, HelpSteer or OASST export);
- a file `ingest` reads as preferences (hh-rlhf JSONL, ...), read the same way.

Each pair comes out as {"id", "prompt", "a", "b", "human"}: which answer is shown as A is drawn from a hash of the
pair (so a judge cannot learn "the first is the person's"), `human` is 1.0 when the person preferred A. Slices for
the agreement table: the prompt's length (short or long, split at the median) and the source's `category` where it
has one.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import polars as pl

from pipelines.core.errors import ConfigError
from pipelines.core.labels import latest, pair_key
from pipelines.core.stage import DROP, Context

CATEGORY_KEYS = ("category", "task_category", "domain")


def labelled_pairs(source: str, limit: int | None = None) -> tuple[list[dict], dict]:
    """(pairs, what was read: {"source", "kind", "pairs", "left_out", "digest"})."""
    path = Path(source)
    if path.is_dir() and (path / "labels.sqlite").exists():
        rows, info = _run_labels(path)
    elif path.is_dir():
        rows, info = _export(path), {"kind": "export: chosen is the person's preference"}
    elif path.is_file():
        rows, info = _ingested(path, limit), {"kind": "file read by ingest: chosen is the person's preference"}
    else:
        raise ConfigError(f"labels {source}: no such run dir, export dir or file")
    rows = rows[:limit] if limit else rows
    if not rows:
        raise ConfigError(f"labels {source}: no labelled pairs found ({info.get('kind')})")
    pairs, digest = shown_pairs(rows)
    return pairs, {"source": str(path.resolve()), **info, "pairs": len(pairs), "digest": digest}


def shown_pairs(rows: list[dict]) -> tuple[list[dict], str]:
    """Rows {"prompt", "preferred", "other"[, "category"]} as judged pairs with their slices, and their digest."""
    pairs = [_shown(r) for r in rows]
    lengths = sorted(len(p["prompt"]) for p in pairs)
    median = lengths[len(lengths) // 2]
    import langid

    for p in pairs:
        category = p.pop("category")
        p["slices"] = {"length": "long" if len(p["prompt"]) >= median else "short",
                       "language": langid.classify(p["prompt"])[0],
                       **({"category": str(category)} if category else {})}
    return pairs, hashlib.sha256(json.dumps([[p["id"], p["human"]] for p in pairs]).encode()).hexdigest()[:16]


def _text(answer) -> str:
    """An answer as text: a message list's last turn, or the string."""
    if isinstance(answer, list):
        return str(answer[-1].get("content") or "") if answer else ""
    return str(answer or "")


def _row(prompt: str, preferred, other, category=None) -> dict:
    return {"prompt": prompt, "preferred": _text(preferred), "other": _text(other), "category": category}


def _shown(row: dict) -> dict:
    key = hashlib.sha256(json.dumps([row["prompt"], row["preferred"], row["other"]]).encode()).hexdigest()
    first = int(key[:8], 16) % 2 == 0
    a, b = (row["preferred"], row["other"]) if first else (row["other"], row["preferred"])
    return {"id": key[:16], "prompt": row["prompt"], "a": a, "b": b, "human": 1.0 if first else 0.0,
            "category": row.get("category")}


def _frame_rows(frame: pl.DataFrame) -> list[dict]:
    if DROP in frame.columns:
        frame = frame.filter(pl.col(DROP).is_null())
    missing = {"prompt", "chosen", "rejected"} - set(frame.columns)
    if missing:
        raise ConfigError(f"labels: preference rows need prompt, chosen and rejected (missing {sorted(missing)})")
    return [_row(r["prompt"], r["chosen"], r["rejected"], _category(r)) for r in frame.to_dicts()]


def _category(row: dict):
    """A row's category for the slices: a column, or a key ingest kept in `meta`."""
    try:
        meta = json.loads(row.get("meta") or "{}")
    except (TypeError, ValueError):
        meta = {}
    for key in CATEGORY_KEYS:
        if row.get(key) or (isinstance(meta, dict) and meta.get(key)):
            return row.get(key) or meta[key]
    return None


def _export(path: Path) -> list[dict]:
    files = sorted((path / "data").glob("*prefs-*.parquet")) or sorted(path.glob("**/*prefs*.parquet"))
    if not files:
        raise ConfigError(f"labels {path}: an export dir needs preference splits (*_prefs-*.parquet)")
    return _frame_rows(pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed"))


def _ingested(path: Path, limit: int | None) -> list[dict]:
    from pipelines.stages.ingest import Ingest

    spec = f"{path}?max_rows={limit}" if limit else str(path)
    ctx = Context(run_dir=Path(tempfile.mkdtemp(prefix="labels-")), config=None)
    frames = list(Ingest(sources=(spec,), kind="preference").read(ctx))
    return _frame_rows(pl.concat(frames, how="diagonal_relaxed")) if frames else []


def _run_labels(run_dir: Path) -> tuple[list[dict], dict]:
    """The run's pairs as its judge ordered them, with the latest human label of each."""
    from pipelines.review.data import pair_stage, stage_scan

    labels = latest(run_dir, "pair")
    stage = pair_stage(run_dir)
    if stage is None:
        raise ConfigError(f"labels {run_dir}: the run has labels but no stage with preference pairs")
    rows, left_out = [], {}
    for row in stage_scan(run_dir, stage, "kept").collect().to_dicts():
        made = labels.get(("pair", pair_key(row["prompt_id"], row["chosen"], row["rejected"])))
        if made is None:
            continue
        if made.label == "chosen_better":
            rows.append(_row(row["prompt"], row["chosen"], row["rejected"], _category(row)))
        elif made.label == "rejected_better":
            rows.append(_row(row["prompt"], row["rejected"], row["chosen"], _category(row)))
        else:
            left_out[made.label] = left_out.get(made.label, 0) + 1
    return rows, {"kind": f"the review app's labels on stage {stage}", "left_out": left_out}
