"""Near-dedup benchmark: ours against datasketch, rensa, datatrove and text-dedup on one corpus with known truth.

    python bench/dedup.py [N] [--peers datasketch_lsh,datasketch_bulk,rensa,datatrove,text_dedup]
                          [--peer-python bench/.peers-venv/bin/python] [--work DIR]
    python bench/dedup.py 1000000 --stage-memory   # the stage's own peak memory on a million documents

The corpus: N documents of 500-2000 characters made of sentences drawn at random from the real files in
../shared/data/real (ShareGPT, Alpaca, AlpacaEval, GSM8K, Self-Instruct seeds, hh-rlhf). About 10% of the documents
are planted near-duplicates: edited copies (words replaced, deleted, inserted) of another document at edit rates
from 0 to 8%, one to three copies per original, so the true Jaccard similarities of word 5-gram shingles spread over
about 0.4-1.0. The truth is exact: every pair inside a planted family has its Jaccard computed from the shingle sets.

Every tool runs in its own process on the same Parquet file (peers through `bench/peers.py`, installed from
`bench/requirements-peers.txt` into `--peer-python`'s environment) and returns a cluster label per document. The
table shows wall seconds of the dedup work (texts already in memory), docs/s per core used, recall over true pairs
with Jaccard >= 0.8 and >= 0.9 (found = same cluster), precision (predicted same-cluster pairs whose true Jaccard
is >= 0.7; a pair outside the planted families counts as wrong), peak RSS, and each peer's speed as a ratio to ours.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from ingest import real_conversations  # noqa: E402

from pipelines.dedup.minhash import jaccard, shingle_hashes  # noqa: E402
from pipelines.dedup.recall import edit_words  # noqa: E402

PEERS_PYTHON = HERE / ".peers-venv" / "bin" / "python"
PEERS = ("datasketch_lsh", "datasketch_bulk", "rensa", "datatrove", "text_dedup")
PLANTED_SHARE = 0.10
MAX_EDIT_RATE = 0.08
SENTENCE = re.compile(r"(?<=[.!?])\s+")


def build_corpus(n: int, seed: int = 0) -> tuple[list[str], list[list[int]]]:
    """(texts, families): each family lists the indices of one original and its planted copies."""
    sentences = sorted({s.strip() for conv in real_conversations() for turn in conv
                        for s in SENTENCE.split(turn["value"]) if 20 <= len(s.strip()) <= 400})
    rng = random.Random(seed)
    vocabulary = sorted({w for s in sentences[:5000] for w in s.split()})
    n_planted = int(n * PLANTED_SHARE)
    texts: list[str] = []
    while len(texts) < n - n_planted:
        target, doc = rng.randint(500, 2000), []
        while sum(map(len, doc)) + len(doc) < target:
            doc.append(rng.choice(sentences))
        texts.append(" ".join(doc)[:2000])
    families: list[list[int]] = []
    while len(texts) < n:
        original = rng.randrange(n - n_planted)
        family = [original]
        for _ in range(min(rng.choice((1, 1, 1, 2, 3)), n - len(texts))):
            family.append(len(texts))
            texts.append(edit_words(texts[original], rng.uniform(0, MAX_EDIT_RATE), rng, vocabulary))
        families.append(family)
    return texts, families


def true_pairs(texts: list[str], families: list[list[int]]) -> dict[tuple[int, int], float]:
    members = sorted({i for f in families for i in f})
    hashes, offsets = shingle_hashes([texts[i] for i in members], 5)
    at = {doc: k for k, doc in enumerate(members)}

    def shingles(doc):
        return hashes[offsets[at[doc]]:offsets[at[doc] + 1]]

    truth = {}
    for family in families:
        for i, j in combinations(sorted(set(family)), 2):
            truth[(i, j)] = jaccard(shingles(i), shingles(j))
    return truth


def peak_rss_mb() -> float:
    """This process's peak RSS since exec (VmHWM; ru_maxrss would include the parent's peak before the exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(corpus: Path, out: Path) -> None:
    """Same contract as bench/peers.py: cluster labels to `out`, one JSON line on stdout."""
    import numba

    from pipelines.dedup.lsh import components, pairs_of_texts
    from pipelines.dedup.minhash import MinHashParams

    texts = pq.read_table(corpus)["text"].combine_chunks()
    params = MinHashParams()
    started = time.perf_counter()
    pairs_of_texts(texts[:10].to_pylist(), params, 0.8)  # loads the compiled kernels (numba cache) before the clock
    warmup = time.perf_counter() - started
    started = time.perf_counter()
    labels = components(len(texts), pairs_of_texts(pl.from_arrow(texts), params, 0.8))
    seconds = time.perf_counter() - started
    np.save(out, labels.astype(np.int64))
    print(json.dumps({
        "peer": "ours", "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "threads_or_workers": numba.get_num_threads(),
        "note": f"numba kernels, {numba.get_num_threads()} threads; loading compiled kernels took {warmup:.2f} s "
                "once per process, before the clock"}))


def run_stage(corpus: Path) -> None:
    """The NearDedup stage as a recipe runs it: Parquet batches in, both passes, peak memory of the process."""
    import tempfile

    from pipelines.core.stage import Context
    from pipelines.stages.dedup import NearDedup

    def batches():
        for batch in pq.ParquetFile(corpus).iter_batches(batch_size=NearDedup.batch_size):
            frame = pl.from_arrow(batch)
            yield frame.with_columns(pl.col("id").cast(pl.String))

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        stage, ctx = NearDedup(), Context(run_dir=Path(tmp), config=None, fingerprint="bench")
        stage.scan(batches(), ctx)
        dropped = sum(stage.apply(b, ctx)["drop_reason"].is_not_null().sum() for b in batches())
        stage.finish(ctx)
    print(json.dumps({"rows": pq.ParquetFile(corpus).metadata.num_rows, "dropped": int(dropped),
                      "seconds": round(time.perf_counter() - started, 1),
                      "peak_rss_mb": round(peak_rss_mb())}))


def score(labels: np.ndarray, truth: dict[tuple[int, int], float]) -> dict:
    recall = {}
    for level in (0.8, 0.9):
        wanted = [p for p, j in truth.items() if j >= level]
        recall[level] = sum(labels[i] == labels[j] for i, j in wanted) / len(wanted) if wanted else float("nan")
    order = np.argsort(labels, kind="stable")
    _, starts, sizes = np.unique(labels[order], return_index=True, return_counts=True)
    predicted = correct = 0
    for start, size in zip(starts[sizes > 1], sizes[sizes > 1]):
        docs = sorted(order[start:start + size].tolist())
        for pair in combinations(docs, 2):
            predicted += 1
            correct += truth.get(pair, 0.0) >= 0.7
    return {"recall_0.8": recall[0.8], "recall_0.9": recall[0.9],
            "precision": correct / predicted if predicted else float("nan"), "predicted_pairs": predicted}


def run_tool(name: str, python: str, corpus: Path, work: Path) -> dict:
    out = work / f"{name}.npy"
    cmd = ([sys.executable, __file__, "--run-ours", str(corpus), str(out)] if name == "ours" else
           [python, str(HERE / "peers.py"), name, str(corpus), str(out)])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"peer": name, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["labels"] = np.load(out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", nargs="?", type=int, default=200_000)
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--peer-python", default=str(PEERS_PYTHON),
                        help="python of the peers' virtualenv (bench/README.md says how to make it)")
    parser.add_argument("--work", type=Path, default=HERE / ".work")
    parser.add_argument("--stage-memory", action="store_true",
                        help="run the NearDedup stage itself (batches, both passes) on N docs; print its peak memory")
    parser.add_argument("--run-ours", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run-stage", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_ours:
        return run_ours(*args.run_ours)
    if args.run_stage:
        return run_stage(args.run_stage)

    args.work.mkdir(parents=True, exist_ok=True)
    corpus = args.work / f"corpus-{args.n}.parquet"
    truth_file = args.work / f"truth-{args.n}.json"
    if not corpus.exists() or not truth_file.exists():
        texts, families = build_corpus(args.n)
        pq.write_table(pa.table({"id": np.arange(len(texts)), "text": texts}), corpus, row_group_size=65536)
        truth_file.write_text(json.dumps([[i, j, v] for (i, j), v in true_pairs(texts, families).items()]))
    if args.stage_memory:
        proc = subprocess.run([sys.executable, __file__, "--run-stage", str(corpus)], capture_output=True, text=True,
                              check=True)
        print(f"NearDedup stage on {corpus.name}: {proc.stdout.strip()}")
        return
    truth = {(i, j): v for i, j, v in json.loads(truth_file.read_text())}
    print(f"corpus: {args.n} docs, {len(truth)} true pairs in planted families "
          f"({sum(v >= 0.8 for v in truth.values())} at J >= 0.8, {sum(v >= 0.9 for v in truth.values())} at >= 0.9)")

    rows = []
    for name in ["ours", *[p for p in args.peers.split(",") if p]]:
        result = run_tool(name, args.peer_python, corpus, args.work)
        if "error" in result:
            print(f"{name}: failed: {result['error']}")
            continue
        result.update(score(result.pop("labels"), truth))
        rows.append(result)
        print(f"{name}: {result['seconds']:.1f} s ({result['note']})", flush=True)

    ours = rows[0]
    per_core = lambda r: args.n / r["seconds"] / max(1, r["threads_or_workers"])  # noqa: E731
    print(f"\n| tool | seconds | docs/s | docs/s per core | ours faster (per core) | recall J>=0.8 | recall J>=0.9 "
          "| precision | peak RSS MB |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['peer']} | {r['seconds']:.1f} | {args.n / r['seconds']:,.0f} | {per_core(r):,.0f} | "
              f"{per_core(ours) / per_core(r):.1f}x | {r['recall_0.8']:.3f} | {r['recall_0.9']:.3f} | "
              f"{r['precision']:.3f} | {r['peak_rss_mb']:,.0f} |")


if __name__ == "__main__":
    main()
