"""Golden builds: the default ultrachat, orca, self_instruct and ultrafeedback recipes replayed from a recorded
request cache with `--fresh` must export row for row what they exported when the cache was recorded.

Every teacher answer comes from `tests/data/golden/<recipe>.sqlite`, so no server starts; a prompt that changed by a
byte misses the cache, and the build then fails here instead of asking a model (`teacher.base_url` points at a
closed port). Recorded with `python tests/test_golden.py record` (a few minutes on the embedded models); record
again only for a change that is meant to change the data, and say so in the commit.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import run_build  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
BUILDS = {  # recipe: the options of its recorded build (the defaults, with fewer seed rows)
    "ultrachat": ("--limit", "12"),
    "orca": ("--limit", "16"),
    "self_instruct": ("--set", "n_instructions=12"),
    "ultrafeedback": (),
}


def export_digest(run_dir: Path) -> dict[str, dict]:
    """Per exported file: its rows and the sha256 of its rows in order, as JSON (column order included)."""
    out = {}
    for path in sorted((run_dir / "export" / "data").glob("*.parquet")):
        rows = pq.read_table(path).to_pylist()
        text = json.dumps(rows, sort_keys=False, ensure_ascii=False, default=str)
        out[path.name] = {"rows": len(rows), "sha256": hashlib.sha256(text.encode()).hexdigest()}
    return out


def keys_of(cache: Path) -> set[str]:
    with sqlite3.connect(cache) as db:
        return {key for (key,) in db.execute("SELECT key FROM responses")}


@pytest.mark.parametrize("recipe", sorted(BUILDS))
def test_replay_matches_recording(recipe, tmp_path):
    recorded = json.loads((GOLDEN / f"{recipe}.json").read_text())
    run_dir = tmp_path / recipe
    run_dir.mkdir()
    shutil.copy(GOLDEN / f"{recipe}.sqlite", run_dir / "requests.sqlite")
    before = keys_of(run_dir / "requests.sqlite")
    # a request missing from the recording must fail, not start a model; base_url is part of the key, so the
    # recorded answers are found only under the embedded server's key: a miss goes to the embedded server, which
    # PIPELINES_LLAMA_SERVER points at a binary that cannot start
    proc = run_build(run_dir, *recorded["overrides"], extra=(*BUILDS[recipe], "--fresh"), recipe=recipe,
                     check=False, env={"PIPELINES_LLAMA_SERVER": "/nonexistent/llama-server"})
    assert keys_of(run_dir / "requests.sqlite") == before, "the build asked the teacher something not recorded"
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert export_digest(run_dir) == recorded["exports"]


def record() -> None:
    """Run each golden build against the embedded models and keep its request cache and export digest."""
    import tempfile

    GOLDEN.mkdir(parents=True, exist_ok=True)
    for recipe, extra in BUILDS.items():
        run_dir = Path(tempfile.mkdtemp(prefix=f"golden-{recipe}-"))
        proc = run_build(run_dir, extra=extra, recipe=recipe, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        with sqlite3.connect(run_dir / "requests.sqlite") as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute(f"VACUUM INTO '{GOLDEN / f'{recipe}.sqlite.tmp'}'")
        (GOLDEN / f"{recipe}.sqlite.tmp").replace(GOLDEN / f"{recipe}.sqlite")
        digest = {"overrides": [], "exports": export_digest(run_dir)}
        (GOLDEN / f"{recipe}.json").write_text(json.dumps(digest, indent=1) + "\n")
        print(recipe, digest["exports"])


if __name__ == "__main__" and sys.argv[1:] == ["record"]:
    record()
