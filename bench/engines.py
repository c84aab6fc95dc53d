"""Local engine against `--engine ray` on this machine: the dedup recipe, end to end, on the same corpus.

    python bench/engines.py [N] [--work DIR] [--engines local,ray]

The corpus is the one `tests/test_engines.py` makes (`write_corpus`): N ShareGPT records from a seeded RNG with about
5% exact and 5% near copies, a templated family, some e-mail addresses, benchmark prompts and bad lines. Each engine
runs `python -m pipelines.build dedup --set sources=... --set benchmarks=...` in its own process, in a fresh run dir;
Ray starts its own local instance (all cores, no dashboard), as a user's run does. The table shows wall seconds of
the whole command (Ray's start included), the rows exported, near-dedup's own seconds (wall under both engines), the
peak memory of the whole process tree (driver, Ray's daemons and workers: the sum of PSS, so the shared object store
counts once) and the ratio of seconds to the local engine. It also checks that both exports hold the same rows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import polars as pl
import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT)]

from tests.test_engines import write_corpus  # noqa: E402


def tree_memory(pid: int) -> int:
    """Bytes of PSS of a process and all its descendants (0 for those that vanish while being read)."""
    total = 0
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for process in processes:
        try:
            total += process.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def run(engine: str, corpus: Path, run_dir: Path) -> dict:
    cmd = [sys.executable, "-m", "pipelines.build", "dedup", "--run-dir", str(run_dir), "--engine", engine,
           "--set", f"sources={corpus}", "--set", f"benchmarks=bench={corpus.parent / 'benchmark.jsonl'}"]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], tree_memory(proc.pid))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    seconds = time.monotonic() - started
    done.set()
    sampler.join()
    if proc.returncode:
        sys.exit(f"{engine} failed:\n{err[-3000:]}")
    report = json.loads((run_dir / "report.json").read_text())
    stages = {row["stage"].split("_", 1)[1]: row for row in report["stages"]}
    return {"engine": engine, "seconds": seconds, "rows_out": stages["export"]["rows_out"],
            "near_seconds": stages["dedup_near"]["seconds"], "peak_mb": peak[0] / 2**20,
            "export": pl.read_parquet(run_dir / "export" / "data" / "*.parquet")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("n", type=int, nargs="?", default=200_000, help="records in the corpus")
    parser.add_argument("--work", type=Path, default=None, help="where the corpus and run dirs go (default: temp)")
    parser.add_argument("--engines", default="local,ray")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-engines-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.jsonl"
    planted = write_corpus(corpus, args.n)
    print(f"corpus: {args.n:,} records ({planted['exact']:,} exact and {planted['near']:,} near copies planted), "
          f"{corpus.stat().st_size / 2**20:.0f} MB; {psutil.cpu_count()} cores")
    results = []
    for engine in args.engines.split(","):
        results.append(run(engine, corpus, work / f"run-{engine}-{time.time_ns()}"))
    base = results[0]["seconds"]
    print("\n| engine | seconds | rows out | near-dedup seconds | peak memory MB (process tree) | ratio vs local |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['engine']} | {r['seconds']:.1f} | {r['rows_out']:,} | {r['near_seconds']:.1f} | "
              f"{r['peak_mb']:,.0f} | {r['seconds'] / base:.2f}x |")
    same = all(r["export"].equals(results[0]["export"]) for r in results)
    print(f"\nexports identical (ids, messages, order): {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
