"""Run a recipe's stages in order, materializing every boundary as Parquet so that reruns skip and kills resume.

Layout of `runs/<recipe>/<NN>_<stage>/`:
- `part-NNNNN.parquet`: the kept rows of output batch N, written to a temp name and renamed, so a part either
  exists whole or not at all. Its schema metadata holds what producing it cost (seconds, counters, teacher stats).
- `_dropped/part-NNNNN.parquet` (written before the kept part), merged into `dropped.parquet` when the stage ends
  and kept: a stage resumed after its end (a part damaged since) gathers the drops of the parts it kept again.
- `_FINGERPRINT`: the fingerprint the parts were made under; parts under another fingerprint are discarded.
- `_SUCCESS.json`: written last: fingerprint, rows in/out, drops by reason, seconds, requests, tokens, and the
  stage's `summary()` (what it reports beyond counts, by section).

Fingerprint = sha256(stage name, its settings, the teacher identity if it uses one, the upstream fingerprint, the
package version). A map stage resumes after its last complete part: its input is finished Parquet read in file
order, re-cut into the same batches, so batch N always holds the same rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import __version__
from pipelines.core import progress
from pipelines.core.errors import PipelineError, ResourceError, describe_os_error
from pipelines.core.files import replace_with, write_json
from pipelines.core.labels import digest as label_digest
from pipelines.core.stage import DROP, QUARANTINE_ONLY, Context, MapStage, Source, Stage, TwoPassStage, teacher_for
from schemas import QUARANTINE

PACKAGE = Path(__file__).resolve().parents[1]  # pipelines/: stages name their prompt files from here

META_KEY = b"pipelines"
TEACHER_STATS = ("requests", "cache_hits", "retries", "failures", "tokens_in", "tokens_out", "cost")


def fingerprint(stage: Stage, ctx: Context, upstream: str) -> str:
    payload = {"stage": stage.name, "settings": stage.settings(), "upstream": upstream, "version": __version__}
    if isinstance(stage, Source):
        payload["limit"] = ctx.limit
    if stage.uses_teacher and teacher_for(stage, ctx) is not None:
        payload["teacher"] = teacher_for(stage, ctx).config.identity()
        for role in stage.other_roles:
            payload[role] = teacher_for(stage, ctx, role).config.identity()
    if stage.reads_labels and (labels := label_digest(ctx.run_dir)):  # a changed label exports again
        payload["labels"] = labels
    if stage.prompt_files:  # what the teacher reads: an edited prompt file makes the stage run again
        payload["prompts"] = {name: hashlib.sha256((PACKAGE / name).read_bytes()).hexdigest()
                              for name in stage.prompt_files}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


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


def rebatch(frames: Iterator[pl.DataFrame], size: int, group: str | None = None) -> Iterator[pl.DataFrame]:
    """Re-cut a stream of frames into frames of exactly `size` rows (the last may be shorter); with `group`, a run
    of rows with one value of that column is never cut: a frame grows past `size` to its end."""
    buffer: list[pl.DataFrame] = []
    held = 0
    for frame in frames:
        if not frame.height:
            continue
        buffer.append(frame)
        held += frame.height
        while held >= size:
            joined = pl.concat(buffer, how="diagonal_relaxed")
            cut = size if group is None else _group_end(joined[group], size)
            if cut is None:  # the group may go on in the next frame
                buffer = [joined]
                break
            yield joined.head(cut)
            rest = joined.slice(cut)
            buffer, held = ([rest] if rest.height else []), rest.height
    if held:
        yield pl.concat(buffer, how="diagonal_relaxed")


def _group_end(keys: pl.Series, size: int) -> int | None:
    """Where the group running through row `size - 1` ends, or None if it runs to the end of `keys`."""
    last = keys[size - 1]
    for cut in range(size, len(keys)):
        if keys[cut] != last:
            return cut
    return None


def _write_atomic(frame: pl.DataFrame, path: Path, meta: dict | None = None) -> None:
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


def _gather(parts: list[Path], out: Path) -> None:
    """Parts (checked when written) into one file by polars' streaming engine: a stage that dropped rows from a corpus
    of any size gathers them without holding them."""
    def write(tmp: Path) -> None:
        pl.concat([pl.scan_parquet(p) for p in parts], how="diagonal_relaxed").sink_parquet(
            tmp, compression="lz4", row_group_size=8192)  # a row group at a time: 140 MB for 280 MB of rows
        check_part(tmp)

    replace_with(out, write)


def _part_meta(path: Path) -> dict:
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


def _keep_intact_parts(stage_dir: Path) -> bool:
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


def _rows_in_parts(stage_dir: Path) -> int | None:
    """The rows the stage's parts say they hold, or None when one of them cannot be read."""
    try:
        return sum(_part_meta(p).get("rows_out", 0) for p in sorted(stage_dir.glob("part-*.parquet")))
    except (OSError, pa.ArrowException):
        return None


class Runner:
    """Runs stages under `run_dir`; `run()` returns one report row per stage."""

    def __init__(self, stages: list[Stage], ctx: Context, engine=None):
        self.stages = stages
        self.ctx = ctx
        self.engine = engine  # runs the stages it `takes` elsewhere (`pipelines.engines`: Ray); None: all run here

    def run(self) -> list[dict]:
        rows, upstream, previous = [], "", None
        with progress.live(), self.engine or contextlib.nullcontext():
            for index, stage in enumerate(self.stages):
                stage_dir = self.ctx.run_dir / f"{index:02d}_{stage.name}"
                fp = fingerprint(stage, self.ctx, upstream)
                try:
                    row = self._run_stage(stage, stage_dir, fp, previous)
                except Exception as exc:
                    if (line := describe_os_error(exc)) is None:
                        raise
                    raise ResourceError(f"stage {stage_dir.name} under {self.ctx.run_dir}: {line}") from exc
                rows.append(row)
                progress.console.log(f"{stage_dir.name}: {row['status']}, {row['rows_in']} in, "
                                     f"{sum(row['dropped'].values())} dropped, {row['rows_out']} out")
                upstream, previous = fp, (stage_dir, row)
        return rows

    def run_on(self, stage: Stage, parts_dir: Path) -> dict:
        """Run one stage on a directory of Parquet parts (`part-*.parquet`, as a stage writes them) into
        `run_dir/01_<name>`, resuming as `run` does; for benchmarks and tests of one stage at scale."""
        stage_dir = self.ctx.run_dir / f"01_{stage.name}"
        upstream = hashlib.sha256(str(Path(parts_dir).resolve()).encode()).hexdigest()
        with progress.live(), self.engine or contextlib.nullcontext():
            return self._run_stage(stage, stage_dir, fingerprint(stage, self.ctx, upstream),
                                   (Path(parts_dir), {"rows_out": _rows_in_parts(Path(parts_dir))}))

    def _run_stage(self, stage: Stage, stage_dir: Path, fp: str, previous) -> dict:
        success = stage_dir / "_SUCCESS.json"
        if success.exists():
            done = json.loads(success.read_text())
            if done["fingerprint"] == fp and _rows_in_parts(stage_dir) == done["rows_out"]:
                return {**done, "status": "skipped"}
            success.unlink()  # another fingerprint, or a part lost or damaged since: run it again
        marker = stage_dir / "_FINGERPRINT"
        resumable = isinstance(stage, (MapStage, Source))
        if stage_dir.exists() and (not resumable or not marker.exists() or marker.read_text() != fp):
            shutil.rmtree(stage_dir)
        resumed = stage_dir.exists() and _keep_intact_parts(stage_dir)
        (stage_dir / "_dropped").mkdir(parents=True, exist_ok=True)
        marker.write_text(fp)

        if previous is None or isinstance(stage, Source):
            rows_in, read_input = None, lambda: iter(())
        else:
            prev_dir, prev_row = previous
            rows_in = prev_row["rows_out"]
            read_input = lambda: rebatch(read_parts(prev_dir), stage.batch_size, stage.group_by)  # noqa: E731
            first = next(iter(sorted(prev_dir.glob("part-*.parquet"))), None)
            if first is not None:
                stage.check_columns(pq.read_schema(first).names)

        self.ctx.fingerprint = fp
        labels = label_digest(self.ctx.run_dir) if stage.reads_labels else None  # what this export applies
        task = progress.add(f"{stage.name}", total=rows_in)
        try:
            if self.engine is not None and previous is not None and self.engine.takes(stage):
                self.engine.run(self, stage, stage_dir, previous[0], task)
            elif isinstance(stage, MapStage):
                self._run_map(stage, stage_dir, read_input(), task)
            elif isinstance(stage, TwoPassStage):
                self._run_two_pass(stage, stage_dir, read_input, task)
            else:
                self._run_stream(stage, stage_dir, read_input(), task)
        finally:
            progress.remove(task)
        return self._finish(stage, stage_dir, fp, rows_in, resumed, labels)

    def _run_map(self, stage: MapStage, stage_dir: Path, batches, task) -> None:
        for k, batch in enumerate(batches):
            if not (stage_dir / f"part-{k:05d}.parquet").exists():
                started, before = time.monotonic(), self._teacher_stats()
                self.ctx.counters.clear()
                out = stage.process(batch, self.ctx)
                self._write_part(stage_dir, k, out, started, before)
            progress.advance(task, batch.height)

    def _run_stream(self, stage: Stage, stage_dir: Path, batches, task) -> None:
        started, before = time.monotonic(), self._teacher_stats()
        self.ctx.counters.clear()
        outputs = stage.run(progress.counted(batches, task), self.ctx)
        if isinstance(stage, Source) and self.ctx.limit is not None:
            outputs = rebatch(outputs, self.ctx.limit)
            outputs = (next(outputs, pl.DataFrame()),)
        for k, out in enumerate(outputs):
            if not (stage_dir / f"part-{k:05d}.parquet").exists():  # a Source skips parts it already wrote
                self._write_part(stage_dir, k, out, started, before)
            started, before = time.monotonic(), self._teacher_stats()
            self.ctx.counters.clear()

    def _run_two_pass(self, stage: TwoPassStage, stage_dir: Path, read_input, task, scan=None) -> None:
        """Scan the input (the progress bar counts this pass; an engine passes its own `scan()`), then write one part
        per batch as it is applied."""
        started, before = time.monotonic(), self._teacher_stats()
        self.ctx.counters.clear()
        if scan is None:
            stage.scan(progress.counted(read_input(), task), self.ctx)
        else:
            scan()
        for k, batch in enumerate(read_input()):
            self._write_part(stage_dir, k, stage.apply(batch, self.ctx), started, before)
            started, before = time.monotonic(), self._teacher_stats()
            self.ctx.counters.clear()
        stage.finish(self.ctx)

    def _write_part(self, stage_dir: Path, k: int, out: pl.DataFrame, started: float, before: Counter) -> None:
        dropped, drop_part = Counter(), stage_dir / "_dropped" / f"part-{k:05d}.parquet"
        if DROP in out.columns and out[DROP].null_count() < out.height:  # some rows dropped
            gone = out.filter(pl.col(DROP).is_not_null())
            dropped.update(reason_category(r) for r in gone[DROP].to_list())
            _write_atomic(gone, drop_part)
            out = out.filter(pl.col(DROP).is_null())
        else:  # what an earlier run of this batch dropped, if anything, is not this run's
            drop_part.unlink(missing_ok=True)
        if DROP in out.columns:
            out = out.drop(DROP, *[c for c in QUARANTINE_ONLY if c in out.columns])
        meta = {
            "rows_out": out.height,
            "dropped": dict(dropped),
            "seconds": time.monotonic() - started,
            "counters": dict(self.ctx.counters),
            "teacher": dict(self._teacher_stats() - before),
        }
        _write_atomic(out, stage_dir / f"part-{k:05d}.parquet", meta)

    def _teacher_stats(self) -> Counter:
        """The clients' counters (teacher, judge and embedder, counted once when two roles are one client)."""
        total = Counter()
        clients = (self.ctx.teacher, self.ctx.judge, self.ctx.embedder)
        for teacher in {id(t): t for t in clients if t is not None}.values():
            total.update(teacher.stats)
        return total

    def _finish(self, stage: Stage, stage_dir: Path, fp: str, rows_in: int | None, resumed: bool,
                labels: str | None = None) -> dict:
        totals = {"rows_out": 0, "seconds": 0.0}
        dropped, counters, teacher = Counter(), Counter(), Counter()
        for path in sorted(stage_dir.glob("part-*.parquet")):
            meta = _part_meta(path)
            totals["rows_out"] += meta.get("rows_out", 0)
            totals["seconds"] += meta.get("seconds", 0.0)
            dropped.update(meta.get("dropped", {}))
            counters.update(meta.get("counters", {}))
            teacher.update(meta.get("teacher", {}))
        drop_parts = sorted((stage_dir / "_dropped").glob("part-*.parquet"))
        if drop_parts:
            _gather(drop_parts, stage_dir / "dropped.parquet")
        else:
            (stage_dir / "dropped.parquet").unlink(missing_ok=True)
        if rows_in is None:
            rows_in = totals["rows_out"] + sum(dropped.values())
        row = {
            "stage": stage_dir.name,
            "fingerprint": fp,
            "rows_in": rows_in,
            "rows_out": totals["rows_out"],
            "dropped": dict(dropped),
            "seconds": round(totals["seconds"], 2),
            "counters": dict(counters),
            **{name: teacher.get(name, 0) for name in TEACHER_STATS},
            "teacher_events": {k: v for k, v in sorted(teacher.items()) if k not in TEACHER_STATS},
            "summary": stage.summary(dict(counters)),
            **({"labels": labels} if labels is not None else {}),  # the human labels' digest the export applied
        }
        write_json(stage_dir / "_SUCCESS.json", row)
        return {**row, "status": "resumed" if resumed else "ran"}


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
