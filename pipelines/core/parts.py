"""A stage's Parquet parts: how the runner and the engines write, check and read them.

- `part-NNNNN.parquet`: the kept rows of output batch N, written to a temp name and renamed, so a part either exists
  whole or not at all. Its schema metadata holds what producing it cost (seconds, counters, teacher stats).
- `_dropped/part-NNNNN.parquet`: the dropped rows of batch N (written before the kept part), gathered into
  `dropped.parquet` when the stage ends.

`write_part` is the one writer of output batches: the runner calls it here, and the Ray engine's workers call it
where they run, so part k is the same file under either engine.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.errors import PipelineError
from pipelines.core.files import replace_with
from pipelines.core.stage import DROP, QUARANTINE_ONLY

META_KEY = b"pipelines"


def reason_category(reason: str) -> str:
    """`"near_duplicate: of 3fa2"` -> `"near_duplicate"`."""
    return reason.split(":", 1)[0].strip()


def read_parts(stage_dir: Path) -> Iterator[pl.DataFrame]:
    for path in sorted(stage_dir.glob("part-*.parquet")):
        yield pl.read_parquet(path)


def read_output(stage_dir: Path) -> pl.DataFrame:
    """All kept rows of a finished stage as one frame."""
    frames = [f for f in read_parts(stage_dir) if f.width]
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def write_part(stage_dir: Path, k: int, out: pl.DataFrame, started: float, counters: dict,
               teacher: dict | None = None) -> None:
    """Write output batch `k` of a stage: its dropped rows (drop_reason set) to `_dropped/part-k` first, then its
    kept rows, without drop_reason and the quarantine-only columns, to `part-k`, whose metadata holds the rows out,
    the drops by category, the seconds since `started`, the stage's `counters` for the batch and `teacher` (the
    clients' stats the batch added)."""
    dropped, drop_part = Counter(), stage_dir / "_dropped" / f"part-{k:05d}.parquet"
    if DROP in out.columns and out[DROP].null_count() < out.height:  # some rows dropped
        gone = out.filter(pl.col(DROP).is_not_null())
        dropped.update(reason_category(r) for r in gone[DROP].to_list())
        write_atomic(gone, drop_part)
        out = out.filter(pl.col(DROP).is_null())
    else:  # what an earlier run of this batch dropped, if anything, is not this run's
        drop_part.unlink(missing_ok=True)
    if DROP in out.columns:
        out = out.drop(DROP, *[c for c in QUARANTINE_ONLY if c in out.columns])
    meta = {
        "rows_out": out.height,
        "dropped": dict(dropped),
        "seconds": time.monotonic() - started,
        "counters": dict(counters),
        "teacher": dict(teacher or {}),
    }
    write_atomic(out, stage_dir / f"part-{k:05d}.parquet", meta)


def write_atomic(frame: pl.DataFrame, path: Path, meta: dict | None = None) -> None:
    """polars' own Parquet writer (no Arrow round trip), LZ4 (as small as snappy here, faster both ways); `meta`
    goes into the file's key-value metadata. A stage never finishes on a part the next stage would choke on: the
    frame's strings are checked to be UTF-8 before it is written (2 ms for a 6k-row ingest part; reading the part
    back whole cost 6 ms, 8% of ingest) and the file's footer is read back before it is renamed into place."""
    try:
        frame.to_arrow().validate(full=True)
    except pa.ArrowInvalid as exc:
        raise PipelineError(f"{path}: a part about to be written holds invalid data ({' '.join(str(exc).split())}"
                            "); nothing was marked done. This is a bug: please report it with the input that "
                            "caused it") from None
    extra = {META_KEY.decode(): json.dumps(meta)} if meta is not None else None

    def write(tmp: Path) -> None:
        frame.write_parquet(tmp, compression="lz4", metadata=extra)
        check_part(tmp)

    try:
        replace_with(path, write)  # a failed write leaves no temp file: a full disk gets its space back
    except DamagedPart as exc:
        raise PipelineError(f"{path}: the part just written does not read back ({exc}); check the disk, then "
                            "rerun the same command to resume") from None


def gather(parts: list[Path], out: Path) -> None:
    """Parts (checked when written) into one file by polars' streaming engine: a stage that dropped rows from a corpus
    of any size gathers them without holding them."""
    def write(tmp: Path) -> None:
        pl.concat([pl.scan_parquet(p) for p in parts], how="diagonal_relaxed").sink_parquet(
            tmp, compression="lz4", row_group_size=8192)  # a row group at a time: 140 MB for 280 MB of rows
        check_part(tmp)

    replace_with(out, write)


def part_meta(path: Path) -> dict:
    """What `write_part` recorded in a part's metadata."""
    metadata = pq.read_metadata(path).metadata or {}
    return json.loads(metadata.get(META_KEY, b"{}"))


class DamagedPart(Exception):
    """A checkpoint file that cannot be read back."""


def check_part(path: Path) -> None:
    """Raise DamagedPart unless `path` is a whole Parquet file (its footer reads)."""
    try:
        pq.read_metadata(path)
    except (OSError, pa.ArrowException) as exc:
        raise DamagedPart(" ".join(str(exc).split())[:300]) from None


def _damaged(path: Path) -> bool:
    try:
        check_part(path)
        return False
    except DamagedPart:
        return True


def keep_intact_parts(stage_dir: Path) -> bool:
    """Delete the parts that cannot be read (a file damaged since it was written), with their dropped rows, so a
    resumed stage recomputes them; True when intact parts remain."""
    for dropped in sorted(stage_dir.glob("_dropped/part-*.parquet")):
        if _damaged(dropped):
            dropped.unlink()
            (stage_dir / dropped.name).unlink(missing_ok=True)  # its kept rows come back with it
    intact = False
    for part in sorted(stage_dir.glob("part-*.parquet")):
        if _damaged(part):
            part.unlink()
        else:
            intact = True
    return intact


def rows_in_parts(stage_dir: Path) -> int | None:
    """The rows the stage's parts say they hold, or None when one of them cannot be read."""
    try:
        return sum(part_meta(p).get("rows_out", 0) for p in sorted(stage_dir.glob("part-*.parquet")))
    except (OSError, pa.ArrowException):
        return None
