"""Human labels of a run: `RUN_DIR/labels.sqlite`, written by the review app the moment a reviewer decides, read by
the export stages.

A label is about a preference pair (`pair`: chosen_better, rejected_better, tie, both_bad) or a conversation (`row`:
keep, drop), keyed by the pair's `pair_key` or the row's `id`. Every decision is kept (reviewer, time, note); the
latest one per row counts, so a reviewer can change their mind. The database is in WAL mode and each label is one
committed transaction: a browser or server that dies loses nothing already sent. The schema grows by numbered
migrations (`MIGRATIONS`, recorded in `user_version`).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.core.errors import PipelineError

FILE = "labels.sqlite"
PAIR_LABELS = ("chosen_better", "rejected_better", "tie", "both_bad")
ROW_LABELS = ("keep", "drop")
LABELS = {"pair": PAIR_LABELS, "row": ROW_LABELS}
MAX_NOTE = 2000
MIGRATIONS = (
    """CREATE TABLE labels (
           seq INTEGER PRIMARY KEY AUTOINCREMENT,
           target TEXT NOT NULL CHECK (target IN ('pair', 'row')),
           row_id TEXT NOT NULL,
           label TEXT NOT NULL,
           note TEXT NOT NULL DEFAULT '',
           reviewer TEXT NOT NULL DEFAULT '',
           created REAL NOT NULL)""",
    "CREATE INDEX labels_row ON labels (target, row_id, seq)",
)


@dataclass(frozen=True)
class Label:
    target: str
    row_id: str
    label: str
    note: str = ""
    reviewer: str = ""
    created: float = 0.0


class LabelError(ValueError):
    """A label the store refuses (unknown target or label, missing id, note too long)."""


def pair_key(prompt_id: str, chosen: list[dict], rejected: list[dict]) -> str:
    """A pair's id: its prompt and the two answers as the AI judge ordered them (stable across rebuilds)."""
    text = json.dumps([prompt_id, chosen, rejected], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def connect(run_dir: Path) -> sqlite3.Connection:
    path = Path(run_dir) / FILE
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    for attempt in range(200):  # switching to WAL does not wait on the busy timeout: two first writers collide
        try:
            db.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 199:
                db.close()
                raise PipelineError(f"{path}: {exc}") from None
            time.sleep(0.05)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise PipelineError(f"{path} is not a label database ({exc}): move it away to export without labels, "
                                f"or restore it from a backup") from None
    db.execute("PRAGMA synchronous=FULL")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    for number, statement in enumerate(MIGRATIONS[version:], version + 1):
        db.execute("BEGIN IMMEDIATE")
        if db.execute("PRAGMA user_version").fetchone()[0] < number:  # another process may have migrated meanwhile
            db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")
        db.execute("COMMIT")
    return db


def check(target: str, row_id: str, label: str, note: str) -> None:
    if target not in LABELS:
        raise LabelError(f"target {target!r}: choose pair or row")
    if label not in LABELS[target]:
        raise LabelError(f"label {label!r} for a {target}: choose among {', '.join(LABELS[target])}")
    if not row_id or len(row_id) > 200:
        raise LabelError("row_id: give the id of the row or pair (at most 200 characters)")
    if len(note) > MAX_NOTE:
        raise LabelError(f"note: at most {MAX_NOTE} characters")


def record(run_dir: Path, target: str, row_id: str, label: str, note: str | None = "", reviewer: str = "") -> Label:
    """Store one decision (committed before this returns). `note=None` keeps the row's latest note: a reviewer
    who changes only the label does not lose why they decided."""
    check(target, row_id, label, note or "")
    with connect(run_dir) as db:
        db.execute("BEGIN IMMEDIATE")
        if note is None:
            before = db.execute("SELECT note FROM labels WHERE target = ? AND row_id = ? ORDER BY seq DESC LIMIT 1",
                                (target, row_id)).fetchone()
            note = before[0] if before else ""
        made = Label(target, row_id, label, note.strip(), reviewer.strip()[:100], time.time())
        db.execute("INSERT INTO labels (target, row_id, label, note, reviewer, created) VALUES (?, ?, ?, ?, ?, ?)",
                   (made.target, made.row_id, made.label, made.note, made.reviewer, made.created))
        db.execute("COMMIT")
    return made


def latest(run_dir: Path, target: str | None = None) -> dict[tuple[str, str], Label]:
    """The decision that counts per (target, row_id): the latest one. Empty when nobody labelled anything."""
    if not (Path(run_dir) / FILE).exists():
        return {}
    with connect(run_dir) as db:
        rows = db.execute("SELECT target, row_id, label, note, reviewer, created FROM labels "
                          "WHERE seq IN (SELECT max(seq) FROM labels GROUP BY target, row_id)").fetchall()
    return {(r[0], r[1]): Label(*r) for r in rows if target is None or r[0] == target}


def digest(run_dir: Path) -> str:
    """A hash of the decisions that count (for the export stages' fingerprint): changes when a label does."""
    decisions = sorted((k[0], k[1], v.label, v.note) for k, v in latest(run_dir).items())
    return hashlib.sha256(json.dumps(decisions).encode()).hexdigest() if decisions else ""
