"""Near-dedup past one machine's memory: the Ray plan (`pipelines/engines/near.py`) on N documents with a fixed memory
budget, beside the local engine where it can run.

    python bench/dedup_scale.py N [--work DIR] [--object-store-mb 256] [--local-up-to 1000000] [--engines ray,local]

The corpus (made once per N under --work, in parts of 100k rows, never whole in memory): documents of 300-1200
characters made of sentences drawn at random from the real files in ../shared/data/real. 10% are planted
near-copies: word edits (replace, delete, insert) at rates from 0 to 8% of a document from the chunk before, so most
planted pairs sit in different shards. For a sample of 2,000 planted pairs the exact Jaccard of word 5-gram shingles
is computed; recall is the share of those with Jaccard >= 0.8 (and >= 0.9) that end in one cluster.

Each engine runs NearDedup alone (`Runner.run_on`) in its own process on one local Ray instance of 2 CPUs and a
`--object-store-mb` object store; this process samples the memory of that process and all its children (Ray's raylet,
GCS and workers) every second. The table: seconds, documents per second per core, the peak resident memory of the
largest process and of all of them, what Ray spilled, what the plan wrote to disk, planted recall, and whether the
Ray run's kept rows, drop reasons and clusters equal the local engine's. A second table gives the plan's steps
(`dedup/plan.json`): task seconds per million documents and bytes written per document, the numbers docs/ray.md
projects to a billion documents from.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from ingest import real_conversations  # noqa: E402

from pipelines.dedup.minhash import jaccard, shingle_hashes  # noqa: E402
from pipelines.dedup.recall import edit_words  # noqa: E402

CHUNK = 100_000
PLANTED_SHARE = 0.10
MAX_EDIT_RATE = 0.08
TRUTH_SAMPLE = 2_000
SENTENCE = re.compile(r"(?<=[.!?])\s+")


def write_corpus(n: int, parts: Path, seed: int = 0) -> None:
    """`parts/part-*.parquet` (id, text) and `parts/truth.parquet` (a, b, jaccard) for a sample of planted pairs."""
    sentences = pl.Series(sorted({s.strip() for conv in real_conversations() for turn in conv
                                  for s in SENTENCE.split(turn["value"]) if 20 <= len(s.strip()) <= 400}))
    vocabulary = sorted({w for s in sentences.head(5000) for w in s.split()})
    rng, edits = np.random.default_rng(seed), random.Random(seed)
    parts.mkdir(parents=True, exist_ok=True)
    pending: list[tuple[str, str]] = []  # originals of the chunk before, to copy into this one
    truth, chunks = [], -(-n // CHUNK)
    for c in range(chunks):
        size = min(CHUNK, n - c * CHUNK)
        planted = int(size * PLANTED_SHARE)
        picks = rng.integers(0, len(sentences), (size - planted, 16))
        texts = pl.DataFrame({"s": sentences.gather(picks.ravel()).reshape((size - planted, 16))}).select(
            pl.col("s").arr.join(" ").str.slice(0, pl.Series(rng.integers(300, 1201, size - planted))))["s"]
        ids = [f"d{c * CHUNK + i}" for i in range(size)]
        originals = list(zip(ids[:size - planted], texts.to_list()))
        source = pending or originals
        copies = []
        for k in range(planted):
            original_id, original = source[int(rng.integers(0, len(source)))]
            copies.append(edit_words(original, edits.uniform(0, MAX_EDIT_RATE), edits, vocabulary))
            if len(truth) < TRUTH_SAMPLE and k % max(1, n // (10 * TRUTH_SAMPLE)) == 0:
                truth.append((original_id, ids[size - planted + k], original, copies[-1]))
        order = rng.permutation(size)
        frame = pl.DataFrame({"id": ids, "text": texts.to_list() + copies})[order]
        frame.write_parquet(parts / f"part-{c:05d}.parquet")
        pending = [originals[i] for i in rng.integers(0, len(originals), min(len(originals), 20_000))]
        print(f"\rcorpus: {c + 1}/{chunks} chunks", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    texts = [t for _, _, a, b in truth for t in (a, b)]
    hashes, offsets = shingle_hashes(texts, 5)
    sets = [hashes[offsets[i]:offsets[i + 1]] for i in range(len(texts))]
    pl.DataFrame({"a": [a for a, *_ in truth], "b": [b for _, b, *_ in truth],
                  "jaccard": [jaccard(sets[2 * i], sets[2 * i + 1]) for i in range(len(truth))]}).write_parquet(
        parts / "truth.parquet")


def run_engine(engine: str, parts: Path, run_dir: Path, object_store_mb: int, spill: Path) -> None:
    """In the measured process: NearDedup alone on `parts`, then `run_dir/result.json`; Ray spills into `spill`."""
    import ray

    from pipelines.core.runner import Runner
    from pipelines.core.stage import Context
    from pipelines.engines.ray import RayEngine
    from pipelines.stages.dedup import NearDedup

    spilling = {"type": "filesystem", "params": {"directory_path": str(spill)}}
    ray.init(address="local", num_cpus=2, object_store_memory=object_store_mb * 2**20, include_dashboard=False,
             logging_level="WARNING", _system_config={"object_spilling_config": json.dumps(spilling)})
    started = time.monotonic()
    stage = NearDedup()
    row = Runner([stage], Context(run_dir=run_dir, config={}), RayEngine() if engine == "ray" else None).run_on(
        stage, parts)
    (run_dir / "result.json").write_text(json.dumps({
        "seconds": time.monotonic() - started, "rows_out": row["rows_out"], "dropped": row["dropped"]}))


def measured(cmd: list[str], spill: Path) -> dict:
    """Run `cmd`, sampling the resident memory of it and its descendants, and the bytes in `spill`, every second."""
    proc = subprocess.Popen(cmd)
    peaks: dict[int, tuple[int, str]] = {}
    total, spilled, done = [0], [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                processes = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            now = 0
            for p in processes:
                try:
                    rss, name = p.memory_info().rss, " ".join(p.cmdline()[:2])[-60:]
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                now += rss
                if rss > peaks.get(p.pid, (0, ""))[0]:
                    peaks[p.pid] = (rss, name)
            total[0] = max(total[0], now)
            spilled[0] = max(spilled[0], sum(f.stat().st_size for f in spill.rglob("*") if f.is_file()))
            done.wait(1.0)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    code = proc.wait()
    done.set()
    thread.join()
    if code:
        raise SystemExit(f"{' '.join(cmd)} exited with {code}")
    largest = max(peaks.values(), default=(0, ""))
    for rss, name in sorted(peaks.values(), reverse=True)[:4]:
        print(f"  peak {rss / 2**20:7.0f} MB  {name}", file=sys.stderr)
    return {"largest_mb": largest[0] / 2**20, "largest": largest[1], "all_mb": total[0] / 2**20,
            "spilled_mb": spilled[0] / 2**20}


def recall(run_dir: Path, truth: pl.DataFrame) -> dict:
    clusters = pl.scan_parquet(run_dir / "dedup" / "clusters.parquet").select("id", "cluster")
    wanted = pl.concat([truth["a"], truth["b"]]).unique().implode()
    found = clusters.filter(pl.col("id").is_in(wanted)).collect()
    joined = truth.join(found.rename({"id": "a", "cluster": "ca"}), on="a", how="left").join(
        found.rename({"id": "b", "cluster": "cb"}), on="b", how="left")
    same = joined.with_columns(same=(pl.col("ca") == pl.col("cb")).fill_null(False))
    return {f"recall_{j}": same.filter(pl.col("jaccard") >= j)["same"].mean() for j in (0.8, 0.9)}


def outcome(run_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    stage = run_dir / "01_dedup_near"
    kept = pl.scan_parquet(stage / "part-*.parquet").select("id").collect()
    dropped = pl.read_parquet(stage / "dropped.parquet", columns=["id", "drop_reason"]) \
        if (stage / "dropped.parquet").exists() else pl.DataFrame()
    return kept, dropped, pl.read_parquet(run_dir / "dedup" / "clusters.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, nargs="?", default=1_000_000)
    parser.add_argument("--work", type=Path, default=HERE / ".work" / "dedup_scale")
    parser.add_argument("--object-store-mb", type=int, default=256)
    parser.add_argument("--local-up-to", type=int, default=1_000_000)
    parser.add_argument("--engines", default="ray,local")
    parser.add_argument("--run", choices=("ray", "local"), help=argparse.SUPPRESS)  # the measured process
    parser.add_argument("--parts", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_engine(args.run, args.parts, args.run_dir, args.object_store_mb, args.run_dir.with_name("spill"))
        return

    parts = args.work / f"corpus-{args.n}"
    if not (parts / "truth.parquet").exists():
        started = time.monotonic()
        write_corpus(args.n, parts)
        print(f"corpus of {args.n:,} documents: {time.monotonic() - started:.0f} s", file=sys.stderr)
    truth = pl.read_parquet(parts / "truth.parquet")
    engines = [e for e in args.engines.split(",") if e == "ray" or args.n <= args.local_up_to]
    rows, results = [], {}
    for engine in engines:
        run_dir = args.work / f"run-{engine}-{args.n}"
        subprocess.run(["rm", "-rf", str(run_dir), str(run_dir.with_name("spill"))], check=True)
        memory = measured([sys.executable, __file__, "--run", engine, "--parts", str(parts), "--run-dir",
                           str(run_dir), "--object-store-mb", str(args.object_store_mb)], run_dir.with_name("spill"))
        result = json.loads((run_dir / "result.json").read_text())
        plan = json.loads((run_dir / "dedup" / "plan.json").read_text()) if engine == "ray" else {"steps": []}
        results[engine] = outcome(run_dir)
        rows.append({"N": args.n, "engine": engine, "seconds": round(result["seconds"], 1),
                     "docs/s/core": round(args.n / result["seconds"] / 2),
                     "largest process MB": round(memory["largest_mb"]), "all processes MB": round(memory["all_mb"]),
                     "ray spilled MB": round(memory["spilled_mb"]),
                     "plan wrote GB": round(sum(s["bytes_written"] for s in plan["steps"]) / 1e9, 2),
                     **{k: round(v, 4) for k, v in recall(run_dir, truth).items()},
                     "dropped": sum(result["dropped"].values())})
        print(f"{engine}: largest process {memory['largest']}", file=sys.stderr)
        if engine == "ray":
            steps = plan["steps"]
    if "local" in results and "ray" in results:
        same = all(a.equals(b) for a, b in zip(results["local"], results["ray"]))
        for row in rows:
            row["identical to local"] = same
    table = pl.DataFrame(rows)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, tbl_hide_dataframe_shape=True):
        print(table)
        if "ray" in results:
            print(pl.DataFrame([{"step": s["step"], "tasks": s["tasks"], "wall s": s["wall_seconds"],
                                 "task s": s["task_seconds"],
                                 "task s per M docs": round(s["task_seconds"] / args.n * 1e6, 2),
                                 "bytes written per doc": round(s["bytes_written"] / args.n, 1)} for s in steps]))
    out = args.work / f"result-{args.n}.json"
    out.write_text(json.dumps({"rows": rows, "steps": steps if "ray" in results else []}, indent=2))


if __name__ == "__main__":
    main()
