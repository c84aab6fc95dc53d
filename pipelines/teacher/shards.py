"""One request cache across Ray workers: each worker writes its answers to a shard, the driver merges the shards.

A teacher stage on Ray (`pipelines.engines.teachers`) gives the batch of part k a shard of its own,
`<stage dir>/_cache/part-<k>.sqlite`: only the task running part k writes it, so no SQLite file is ever written by
two processes (nor over a network filesystem by more than one). The worker reads the run's cache as a read-only,
immutable snapshot (`RequestCache.read_only`: no locks, no WAL, safe on a shared filesystem; the driver checkpoints
the WAL into the file before the stage) and then its shard, so earlier runs' answers and the answers a killed
attempt of the same part committed are never paid again.

The driver merges every shard into the run's cache when the stage starts (a killed run's leftovers) and when it ends,
then deletes it: a later local run, a `--fresh` replay and the next stage hit every answer. A shard that SQLite
cannot read whole (a torn copy, a full disk mid-write) is discarded, and its part's requests are asked again: the
worker counts that as `cache_shards_discarded` in its part, the driver's merge logs it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pipelines.teacher.cache import RequestCache, read_only_uri

COLUMNS = ("key, model, request, text, finish_reason, prompt_tokens, completion_tokens, created, endpoint, extra, "
           "cost")


def shard_path(stage_dir: Path, k: int) -> Path:
    return stage_dir / "_cache" / f"part-{k:05d}.sqlite"


def intact(path: Path) -> bool:
    """Whether SQLite reads `path` whole (and it holds a responses table)."""
    try:
        db = sqlite3.connect(read_only_uri(path), uri=True)
        try:
            ok = db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
            return ok and db.execute("SELECT 1 FROM sqlite_master WHERE name = 'responses'").fetchone() is not None
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return False


def discard(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


class ShardCache(RequestCache):
    """A worker's cache: reads its shard, then the run's cache (read-only); writes its shard only."""

    def __init__(self, shard: Path, run_cache: Path):
        self.discarded = 0
        if shard.exists() and not intact(shard):
            discard(shard)
            self.discarded = 1
        super().__init__(shard)
        self.run_cache = RequestCache.read_only(run_cache) if run_cache.exists() else None

    def get(self, key: str) -> dict | None:
        found = super().get(key)
        if found is None and self.run_cache is not None:
            found = self.run_cache.get(key)
        return found

    def close(self) -> None:
        super().close()
        if self.run_cache is not None:
            self.run_cache.close()


def merge_shards(stage_dir: Path, cache: RequestCache, keep: set[int] = frozenset()) -> tuple[int, int]:
    """Copy every intact shard's answers into `cache` (the first answer of a key wins), delete the shards; (answers
    merged, shards discarded). A damaged shard of a part in `keep` (not written yet) is left for its worker, which
    discards it and counts it; a damaged shard of a finished part is deleted here."""
    merged = discarded = 0
    folder = stage_dir / "_cache"
    for path in sorted(folder.glob("part-*.sqlite")) if folder.exists() else []:
        k = int(path.stem.split("-")[1])
        if not intact(path):
            if k not in keep:
                discard(path)
                discarded += 1
            continue
        before = cache.db.total_changes
        cache.db.execute("ATTACH DATABASE ? AS shard", (str(path),))
        try:
            cache.db.execute(f"INSERT OR IGNORE INTO responses ({COLUMNS}) SELECT {COLUMNS} FROM shard.responses")
        finally:
            cache.db.execute("DETACH DATABASE shard")
        merged += cache.db.total_changes - before
        discard(path)
    if folder.exists() and not any(folder.iterdir()):
        folder.rmdir()
    cache.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the workers' read-only snapshot reads the file alone
    return merged, discarded
