"""Files written whole or not at all: a temp file beside the target, then a rename, so a kill at any moment leaves
the old file or the new one, never half of one (and a failed write leaves no temp file behind)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def replace_with(path: Path, write) -> Path:
    """Call `write(tmp)` on a temp path beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk gets its space back
        raise
    os.replace(tmp, path)
    return path


def write_text(path: Path, text: str) -> Path:
    return replace_with(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, value, indent: int = 2) -> Path:
    return write_text(path, json.dumps(value, indent=indent))


def write_table(table: pa.Table, path: Path) -> Path:
    return replace_with(path, lambda tmp: pq.write_table(table, tmp))
