"""Competing near-duplicate detectors for bench/dedup.py, one peer per process.

    python bench/peers.py PEER CORPUS.parquet OUT.npy [--workers N]

Runs in its own virtualenv (bench/requirements-peers.txt), not the project's.

CORPUS.parquet has columns `id` (int64, 0..n-1 in row order) and `text`. Every peer is configured as close as it
allows to the same duplicate settings: word 5-gram shingles (lowercased text, punctuation folded to spaces, words
split on whitespace), 128 permutations, LSH with 16 bands x 8 rows, Jaccard threshold 0.8. A pair is a duplicate
when the two signatures agree on a whole band (no extra Jaccard check on the candidates, as in datatrove and
text-dedup); duplicate pairs are joined transitively into clusters.

OUT.npy gets an int64 array of length n: one cluster label per document, the smallest id in its cluster (a document
with no duplicate is labelled with its own id). One JSON line goes to stdout at the end, everything else the tools
print goes to stderr:

    {"peer": str, "seconds": float, "peak_rss_mb": float, "threads_or_workers": int, "note": str}

- seconds: wall time of the dedup work only. The clock starts once the texts are in memory (and, for the pipeline
  tools that read files themselves, once their input file is written); the tool's own file IO is inside it.
- peak_rss_mb: peak RSS of this process since exec (VmHWM) plus ru_maxrss of its reaped children (the largest
  child: the kernel keeps a maximum, not a sum), in MiB. A forked child counts the pages it still shares with this
  process once more, so for the tools that fork (datatrove, text-dedup: datasets forks a manager process even with num_proc=1) this is
  an upper bound.
- threads_or_workers: processes or threads the tool was allowed; `--workers` changes it where the tool has a knob.
  Single-threaded libraries run with 1; the parallel tools (rensa's Rayon batches, datatrove, text-dedup) default
  to 2, the cores of the bench machine.

Peers: datasketch_lsh, datasketch_bulk, rensa, datatrove, text_dedup (see each function's docstring).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

NUM_PERM = 128
BANDS = 16
ROWS = 8
NGRAM = 5
THRESHOLD = 0.8
DEFAULT_PARALLEL = 2  # cores of the bench machine
RENSA_BATCH = 4096  # documents per rensa batch call

WORD = re.compile(r"\w+")  # = the project's shingling: [^\w\s]+ -> " ", then split on whitespace


@dataclass
class Run:
    labels: np.ndarray
    seconds: float
    workers: int
    note: str


def shingles(text: str, n: int = NGRAM) -> list[str]:
    """Word n-grams of lowercased text, punctuation folded; a text of n words or fewer is one shingle.

    A list, not a set: repeats do not change a MinHash, and skipping the set is faster.
    """
    words = WORD.findall(text.lower())
    if len(words) <= n:
        return [" ".join(words)]
    return list(map(" ".join, zip(*(words[i:] for i in range(n)))))


class UnionFind:
    """Union-find over 0..n-1 whose roots are the smallest member, so `labels()` is canonical."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra < rb:
            self.parent[rb] = ra
        elif rb < ra:
            self.parent[ra] = rb

    def union_all(self, i: int, others) -> None:
        for j in others:
            self.union(i, int(j))

    def labels(self) -> np.ndarray:
        return np.fromiter((self.find(i) for i in range(len(self.parent))), dtype=np.int64, count=len(self.parent))


def no_workers_knob(workers: int | None, peer: str) -> int:
    if workers not in (None, 1):
        raise SystemExit(f"{peer}: single-threaded library, no workers knob (got --workers {workers})")
    return 1


# --------------------------------------------------------------------------------------------- datasketch


def union_of_queries(lsh, sigs) -> np.ndarray:
    """Labels from querying every document's sketch against the filled datasketch LSH, results unioned."""
    uf = UnionFind(len(sigs))
    for i, m in enumerate(sigs):
        uf.union_all(i, lsh.query(m))
    return uf.labels()


def peer_datasketch_lsh(texts: list[str], workers: int | None, tmp: Path) -> Run:
    """datasketch as its README shows it: a MinHash per document (update_batch of the UTF-8 shingles, default
    SHA-1 32-bit hash, default 'affine32' scheme in 2.x), MinHashLSH(num_perm=128, params=(16, 8)) insert, then a
    query per document; query results are unioned."""
    from datasketch import MinHash, MinHashLSH

    workers = no_workers_knob(workers, "datasketch_lsh")
    start = time.perf_counter()
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, params=(BANDS, ROWS))
    sigs = []
    for i, text in enumerate(texts):
        m = MinHash(num_perm=NUM_PERM)
        m.update_batch([s.encode("utf-8") for s in shingles(text)])
        lsh.insert(i, m)
        sigs.append(m)
    labels = union_of_queries(lsh, sigs)
    return Run(labels, time.perf_counter() - start, workers,
               "datasketch MinHash(128) per doc + update_batch (sha1_hash32, affine32) + MinHashLSH(params=(16,8)) "
               "insert/query, candidates unioned; timing includes Python shingling")


def peer_datasketch_bulk(texts: list[str], workers: int | None, tmp: Path) -> Run:
    """datasketch's bulk path: MinHash.generator (one permutation set shared by all sketches instead of one
    RandomState per MinHash), LeanMinHash signatures, MinHashLSH.insertion_session (buffered inserts,
    check_duplication=False), then a query per document."""
    from datasketch import LeanMinHash, MinHash, MinHashLSH

    workers = no_workers_knob(workers, "datasketch_bulk")
    start = time.perf_counter()
    encoded = ([s.encode("utf-8") for s in shingles(text)] for text in texts)
    sigs = [LeanMinHash(m) for m in MinHash.generator(encoded, num_perm=NUM_PERM)]
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, params=(BANDS, ROWS))
    with lsh.insertion_session(buffer_size=len(texts)) as session:
        for i, m in enumerate(sigs):
            session.insert(i, m, check_duplication=False)
    labels = union_of_queries(lsh, sigs)
    return Run(labels, time.perf_counter() - start, workers,
               "datasketch MinHash.generator(num_perm=128) -> LeanMinHash + MinHashLSH(params=(16,8)) "
               "insertion_session(check_duplication=False) + query, candidates unioned; sha1_hash32, affine32; "
               "timing includes Python shingling")


# --------------------------------------------------------------------------------------------------- rensa


def peer_rensa(texts: list[str], workers: int | None, tmp: Path) -> Run:
    """rensa (Rust): full-set R-MinHash built by batch calls (RMinHash.from_token_sets), RMinHashLSH with 16
    bands (8 rows each) filled by insert_many and asked by query_all; candidates unioned.

    Not the 'rho' pipeline rensa advertises as fastest: rho samples token positions (a different sketch, lower
    recall), and its LSH on a digest matrix only returns duplicate flags, not who duplicates whom."""
    workers = workers or DEFAULT_PARALLEL
    os.environ["RAYON_NUM_THREADS"] = str(workers)  # read when rensa first starts its Rayon pool
    from rensa import RMinHash, RMinHashLSH

    start = time.perf_counter()
    sigs, shingled = [], 0.0
    for lo in range(0, len(texts), RENSA_BATCH):  # batches: all the shingle strings at once would cost ~1 GB here
        t = time.perf_counter()
        token_sets = [shingles(text) for text in texts[lo:lo + RENSA_BATCH]]
        shingled += time.perf_counter() - t
        sigs += RMinHash.from_token_sets(token_sets, num_perm=NUM_PERM, seed=42)
    lsh = RMinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, num_bands=BANDS)
    lsh.insert_many(sigs, start_key=0)
    uf = UnionFind(len(texts))
    for i, candidates in enumerate(lsh.query_all(sigs)):
        uf.union_all(i, candidates)
    labels = uf.labels()
    seconds = time.perf_counter() - start
    return Run(labels, seconds, workers,
               f"rensa RMinHash.from_token_sets(num_perm=128) in batches of {RENSA_BATCH} docs (full-set R-MinHash, "
               f"not rho) + RMinHashLSH(16 bands) insert_many/query_all, candidates unioned; "
               f"RAYON_NUM_THREADS={workers}; timing includes Python shingling ({shingled:.2f} s of it)")


# ----------------------------------------------------------------------------------------------- datatrove


def peer_datatrove(texts: list[str], workers: int | None, tmp: Path) -> Run:
    """datatrove's MinHash pipeline with LocalPipelineExecutor: MinhashDedupSignature (one task per input
    Parquet file) -> MinhashDedupBuckets (16 tasks, one per bucket) -> MinhashDedupCluster(save_cluster_id=True);
    labels are read from the `.clusters` files it writes (doc index, cluster id), which is what
    MinhashDedupFilter(load_cluster_ids=True) would attach. The filter stage itself is not run.

    Tokenizer: datatrove's English default is spaCy's blank("en") tokenizer (no model download, but an extra
    dependency that also splits e.g. "dont" into "do nt"); a whitespace WordTokenizer is passed instead so that
    the words are the same as everyone else's. Text normalisation keeps lowercase, punctuation -> space and
    whitespace folding, and turns off datatrove's number and diacritics normalisation."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupSignature)
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.utils.text import TextNormConfig
    from datatrove.utils.word_tokenizers import WordTokenizer

    class WhitespaceWords(WordTokenizer):
        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    workers = workers or DEFAULT_PARALLEL
    # One input file per signature task: datatrove shards by file, and doc ids restart at 0 in each file.
    bounds = np.linspace(0, len(texts), workers + 1).astype(int)
    (tmp / "input").mkdir()
    for rank in range(workers):
        lo, hi = bounds[rank], bounds[rank + 1]
        pq.write_table(pa.table({"id": pa.array(range(lo, hi), pa.int64()), "text": texts[lo:hi]}),
                       tmp / "input" / f"{rank:05d}.parquet")
    config = MinhashConfig(n_grams=NGRAM, num_buckets=BANDS, hashes_per_bucket=ROWS,
                           norm_config=TextNormConfig(lowercase=True, norm_whitespace=True, remove_punctuation=True,
                                                      norm_unicode_diacritics=False, norm_numbers=False))

    def executor(pipeline, tasks, stage):
        # fork (not datatrove's default forkserver) so that the pool workers are our children and count in
        # RUSAGE_CHILDREN
        return LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=min(workers, tasks),
                                     logging_dir=str(tmp / "logs" / stage), start_method="fork")

    start = time.perf_counter()
    executor([ParquetReader(str(tmp / "input"), text_key="text", id_key="id"),
              MinhashDedupSignature(output_folder=str(tmp / "signatures"), config=config,
                                    language=WhitespaceWords())], workers, "signatures").run()
    executor([MinhashDedupBuckets(input_folder=str(tmp / "signatures"), output_folder=str(tmp / "buckets"),
                                  config=config)], BANDS, "buckets").run()
    executor([MinhashDedupCluster(input_folder=str(tmp / "buckets"), output_folder=str(tmp / "clusters"),
                                  config=config, save_cluster_id=True)], 1, "clusters").run()
    uf = UnionFind(len(texts))
    first_of_cluster: dict[int, int] = {}
    for path in sorted((tmp / "clusters").glob("*.clusters")):
        rank = int(path.name.split(".")[0])  # the signature task, i.e. the input file
        doc_cluster = np.fromfile(path, dtype="<u4").reshape(-1, 2).astype(np.int64)
        for doc, cluster in doc_cluster:
            uf.union(first_of_cluster.setdefault(int(cluster), int(bounds[rank] + doc)), int(bounds[rank] + doc))
    labels = uf.labels()
    seconds = time.perf_counter() - start
    return Run(labels, seconds, workers,
               f"datatrove MinhashConfig(n_grams=5, 16 buckets x 8 hashes, xxhash 64-bit), whitespace word "
               f"tokenizer, no number/diacritics normalisation; LocalPipelineExecutor(workers={workers}, fork): "
               f"signatures ({workers} task(s), one input file each) -> buckets (16 tasks) -> "
               f"cluster(save_cluster_id); timing includes its Parquet reads, signature/bucket/cluster file IO and "
               f"reading .clusters (input Parquet written before the clock)")


# ---------------------------------------------------------------------------------------------- text-dedup


def peer_text_dedup(texts: list[str], workers: int | None, tmp: Path) -> Run:
    """text-dedup 0.4.0's `text_dedup.minhash` CLI (its click command called in-process, no hub access) on a
    dataset saved with `save_to_disk` before the clock: --local --num_perm 128 --b 16 --r 8 --ngram 5
    --threshold 0.8, default sha1 hash (64-bit mode: 32-bit hashes mod 2^61-1), min_length 5 (all our documents
    are longer). It builds the clusters in a module-level UnionFind (`text_dedup.minhash.uf`) and uses it for its
    `__cluster__` column before filtering; labels are read from that UnionFind over its `__index__` (= row order).

    Its tokenizer splits on every single non-word character (re.split(r"\\W")), so ", " gives an empty word
    that takes part in the 5-grams; that is the tool's own shingling and is left as is."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ["HF_DATASETS_CACHE"] = str(tmp / "hf_cache")
    import datasets
    import text_dedup.minhash as td

    workers = workers or DEFAULT_PARALLEL
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp / "input"))
    args = ["--path", str(tmp / "input"), "--local", "--output", str(tmp / "output"), "--cache_dir",
            str(tmp / "hf_cache"), "--column", "text", "--num_proc", str(workers), "--num_perm", str(NUM_PERM),
            "--b", str(BANDS), "--r", str(ROWS), "--ngram", str(NGRAM), "--threshold", str(THRESHOLD)]
    start = time.perf_counter()
    td.main.main(args=args, standalone_mode=False)
    uf = UnionFind(len(texts))
    for i in range(len(texts)):
        uf.union(i, td.uf.find(i))
    labels = uf.labels()
    seconds = time.perf_counter() - start
    return Run(labels, seconds, workers,
               f"text-dedup minhash CLI in-process: num_perm 128, b 16, r 8, ngram 5, threshold 0.8, sha1, "
               f"num_proc {workers}; labels from its UnionFind (its __cluster__ source); timing includes its "
               f"load_from_disk, datasets map/filter caches and save_to_disk of the kept rows (input saved before "
               f"the clock)")


PEERS = {
    "datasketch_lsh": peer_datasketch_lsh,
    "datasketch_bulk": peer_datasketch_bulk,
    "rensa": peer_rensa,
    "datatrove": peer_datatrove,
    "text_dedup": peer_text_dedup,
}


def peak_rss_mb() -> float:
    """Own peak since exec (VmHWM: ru_maxrss would carry the parent's peak over the exec) plus the largest child's."""
    own = next((int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmHWM:")), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round((own + children) / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("corpus", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--workers", type=int, default=None,
                        help="processes/threads for tools that have the knob (default: 1 or 2, see the docstring)")
    args = parser.parse_args()

    # The tools print progress and logs, some to stdout: send all of fd 1 to stderr and keep the real stdout for
    # the one JSON line (forked workers inherit the redirection too).
    result_fd = os.dup(1)
    sys.stdout.flush()
    os.dup2(2, 1)

    table = pq.read_table(args.corpus, columns=["id", "text"])
    if not np.array_equal(table["id"].to_numpy(), np.arange(table.num_rows)):
        raise SystemExit(f"{args.corpus}: `id` must be 0..n-1 in row order")
    texts = table["text"].to_pylist()
    del table

    with tempfile.TemporaryDirectory(prefix=f"peer-{args.peer}-") as tmp:
        run = PEERS[args.peer](texts, args.workers, Path(tmp))
    if run.labels.shape != (len(texts),):
        raise SystemExit(f"{args.peer}: {run.labels.shape[0]} labels for {len(texts)} documents")
    np.save(args.out, run.labels.astype(np.int64))
    line = json.dumps({"peer": args.peer, "seconds": round(run.seconds, 3), "peak_rss_mb": peak_rss_mb(),
                       "threads_or_workers": run.workers, "note": run.note})
    os.write(result_fd, (line + "\n").encode())


if __name__ == "__main__":
    main()
