"""Refresh benchmark: adding a tenth of new data by `pipelines.refresh` against rebuilding everything.

    python bench/refresh.py [N] [--work DIR]

The corpus is bench/dedup.py's (N documents from sentences of the real files in ../shared/data/real, 10% planted
near-duplicates), written as ten JSONL files of OpenAI `messages`. Then, each a separate process:
1. `refresh dedup` over nine files (v1);
2. the tenth file arrives: `refresh dedup` (v2) reads, dedups and exports only it, against v1's index;
3. `refresh dedup` again with nothing new;
4. a full rebuild, what a pipeline without incremental refresh does: `build dedup` over all ten files in a new run
   directory (no cache).
The table gives wall seconds, rows added, and the rebuild's time as a multiple of the incremental refresh's. The rows
of v1 + v2 are compared with the rebuild's: both keep one row per duplicate cluster, so the totals agree to within
the clusters whose keeper differs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from dedup import build_corpus  # noqa: E402


def run(*args: str) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", *args], cwd=HERE.parent, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def rows(folder: Path) -> int:
    return sum(pq.read_metadata(p).num_rows for p in folder.rglob("*.parquet"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("n", type=int, nargs="?", default=200_000)
    parser.add_argument("--work", type=Path, default=HERE / ".work" / "refresh")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    inputs = args.work / "inputs"
    inputs.mkdir(parents=True)
    texts, _ = build_corpus(args.n)
    files = [inputs / f"part-{k:02d}.jsonl" for k in range(10)]
    for k, path in enumerate(files):
        with open(path, "w") as out:
            for text in texts[k::10]:
                out.write(json.dumps({"messages": [{"role": "user", "content": text[:200]},
                                                   {"role": "assistant", "content": text}]}) + "\n")
    held = args.work / "held"
    held.mkdir()
    files[-1].rename(held / files[-1].name)
    root = args.work / "root"
    sources = f"sources={inputs}/*.jsonl"
    timings = [("refresh v1 (9 files)", run("pipelines.refresh", "dedup", "--root", str(root), "--set", sources))]
    (held / files[-1].name).rename(files[-1])
    timings.append(("refresh v2 (+1 file)", run("pipelines.refresh", "dedup", "--root", str(root))))
    timings.append(("refresh, nothing new", run("pipelines.refresh", "dedup", "--root", str(root))))
    rebuild = args.work / "rebuild"
    timings.append(("full rebuild (10 files)", run("pipelines.build", "dedup", "--run-dir", str(rebuild), "--set",
                                                   sources)))
    added = [rows(root / "versions" / "v1"), rows(root / "versions" / "v2"), 0, rows(rebuild / "export")]
    print(f"\n{args.n:,} documents in 10 files\n")
    print("| run | seconds | rows added | rebuild / this |")
    print("|---|---|---|---|")
    for (name, seconds), n in zip(timings, added):
        print(f"| {name} | {seconds:.1f} | {n:,} | {timings[3][1] / seconds:.1f}x |")
    print(f"\nrows in v1 + v2: {added[0] + added[1]:,}; rows in the full rebuild: {added[3]:,}")


if __name__ == "__main__":
    main()
