"""Run a recipe's stages in order, materializing every boundary as Parquet so that reruns skip and kills resume.

Layout of `runs/<recipe>/<NN>_<stage>/`:
- `part-NNNNN.parquet` and `_dropped/part-NNNNN.parquet`: the kept and dropped rows of output batch N
  (`pipelines/core/parts.py`). The dropped parts are merged into `dropped.parquet` when the stage ends and kept: a
  stage resumed after its end (a part damaged since) gathers the drops of the parts it kept again.
- `_FINGERPRINT`: the fingerprint the parts were made under; parts under another fingerprint are discarded.
- `_SUCCESS.json`: written last: fingerprint, rows in/out, drops by reason, seconds, requests, tokens, the
  stage's `summary()` (what it reports beyond counts, by section) and what it `records()` when it starts (an
  export: the digest of the labels it applies).

Fingerprint = sha256(stage name, its settings, what its `identity(ctx)` adds (a source's limit, the teachers it asks
and its prompt files, the labels an export applies), the upstream fingerprint, the package version). A map stage
resumes after its last complete part: its input is finished Parquet read in file order, re-cut into the same
batches, so batch N always holds the same rows.
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
import pyarrow.parquet as pq

from pipelines import __version__
from pipelines.core import progress
from pipelines.core.errors import ResourceError, describe_os_error
from pipelines.core.files import write_json
from pipelines.core.parts import gather, keep_intact_parts, part_meta, read_parts, rows_in_parts, write_part
from pipelines.core.stage import Context, MapStage, Source, Stage, TwoPassStage

TEACHER_STATS = ("requests", "cache_hits", "retries", "failures", "tokens_in", "tokens_out", "cost")


def fingerprint(stage: Stage, ctx: Context, upstream: str) -> str:
    payload = {**stage.identity(ctx), "stage": stage.name, "settings": stage.settings(), "upstream": upstream,
               "version": __version__}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def teacher_stats(clients: dict) -> Counter:
    """The clients' counters added up (each counted once when two roles are one client)."""
    total = Counter()
    for client in {id(c): c for c in clients.values() if c is not None}.values():
        total.update(client.stats)
    return total


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


class Runner:
    """Runs stages under `run_dir`; `run()` returns one report row per stage."""

    def __init__(self, stages: list[Stage], ctx: Context, engine=None):
        self.stages = stages
        self.ctx = ctx
        self.engine = engine  # runs the stages it `takes` elsewhere (`pipelines.engines`: Ray); None: all run here

    def run(self) -> list[dict]:
        rows, upstream, previous = [], "", None
        if self.engine is not None:
            self.engine.check(self.stages, self.ctx)  # before any work
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
                                   (Path(parts_dir), {"rows_out": rows_in_parts(Path(parts_dir))}))

    def _run_stage(self, stage: Stage, stage_dir: Path, fp: str, previous) -> dict:
        success = stage_dir / "_SUCCESS.json"
        if success.exists():
            done = json.loads(success.read_text())
            if done["fingerprint"] == fp and rows_in_parts(stage_dir) == done["rows_out"]:
                return {**done, "status": "skipped"}
            success.unlink()  # another fingerprint, or a part lost or damaged since: run it again
        marker = stage_dir / "_FINGERPRINT"
        resumable = isinstance(stage, (MapStage, Source))
        if stage_dir.exists() and (not resumable or not marker.exists() or marker.read_text() != fp):
            shutil.rmtree(stage_dir)
        resumed = stage_dir.exists() and keep_intact_parts(stage_dir)
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
        recorded = stage.records(self.ctx)  # taken before it runs: the labels an export applies
        task = progress.add(f"{stage.name}", total=rows_in)
        try:
            if self.engine is not None and previous is not None and self.engine.takes(stage, self.ctx):
                self.engine.run(self, stage, stage_dir, previous[0], task)
            elif isinstance(stage, MapStage):
                self._run_map(stage, stage_dir, read_input(), task)
            elif isinstance(stage, TwoPassStage):
                self._run_two_pass(stage, stage_dir, read_input, task)
            else:
                self._run_stream(stage, stage_dir, read_input(), task)
        finally:
            progress.remove(task)
        return self._finish(stage, stage_dir, fp, rows_in, resumed, recorded)

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
        write_part(stage_dir, k, out, started, self.ctx.counters, self._teacher_stats() - before)

    def _teacher_stats(self) -> Counter:
        return teacher_stats(self.ctx.clients)

    def _finish(self, stage: Stage, stage_dir: Path, fp: str, rows_in: int | None, resumed: bool,
                recorded: dict | None = None) -> dict:
        totals = {"rows_out": 0, "seconds": 0.0}
        dropped, counters, teacher = Counter(), Counter(), Counter()
        for path in sorted(stage_dir.glob("part-*.parquet")):
            meta = part_meta(path)
            totals["rows_out"] += meta.get("rows_out", 0)
            totals["seconds"] += meta.get("seconds", 0.0)
            dropped.update(meta.get("dropped", {}))
            counters.update(meta.get("counters", {}))
            teacher.update(meta.get("teacher", {}))
        drop_parts = sorted((stage_dir / "_dropped").glob("part-*.parquet"))
        if drop_parts:
            gather(drop_parts, stage_dir / "dropped.parquet")
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
            **(recorded or {}),  # what the stage applied beyond its input (an export: the human labels' digest)
        }
        write_json(stage_dir / "_SUCCESS.json", row)
        return {**row, "status": "resumed" if resumed else "ran"}
