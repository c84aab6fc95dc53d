"""Score-first diverse selection (`pipelines.dedup.diverse`): the blocked exact selection against a plain numpy loop.

    python bench/diverse_select.py [--rows 1000000] [--dims 384] [--keep 10000] [--min-distance 0.3] [--loop-rows 100000]

Vectors are clustered (2,000 centres, unit length), in a random score order. The blocked selection runs on
`--rows`; the loop (one matrix-vector product per candidate against every row taken) runs on the first `--loop-rows`
of them, and the blocked one again on those same rows for the ratio. Prints rows, kept, seconds, peak extra memory
(tracemalloc, numpy's buffers included) and the speed ratio; both pick the same rows (checked).
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipelines.dedup.diverse import select_diverse, select_loop  # noqa: E402


def clustered(n: int, dims: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2000, dims)).astype(np.float32)
    out = np.empty((n, dims), np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        out[start:stop] = centres[rng.integers(0, 2000, stop - start)] + 0.6 * rng.normal(
            size=(stop - start, dims)).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def timed(fn):
    tracemalloc.start()
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--keep", type=int, default=10_000)
    parser.add_argument("--min-distance", type=float, default=0.3)
    parser.add_argument("--loop-rows", type=int, default=100_000)
    args = parser.parse_args()
    vectors = clustered(args.rows, args.dims)
    order = np.random.default_rng(1).permutation(args.rows)
    small = order[order < args.loop_rows]
    print(f"{args.rows:,} x {args.dims} float32 ({vectors.nbytes / 2**30:.2f} GiB), keep {args.keep:,}, "
          f"min_distance {args.min_distance}")
    print("| method | rows | kept | too close | seconds | peak extra MiB |")
    print("|---|---|---|---|---|---|")
    runs = {}
    for name, rows, fn in (
            ("blocked (ours)", args.rows, lambda: select_diverse(vectors, order, args.keep, args.min_distance)),
            ("blocked (ours)", args.loop_rows, lambda: select_diverse(vectors, small, args.keep, args.min_distance)),
            ("numpy loop", args.loop_rows, lambda: select_loop(vectors, small, args.keep, args.min_distance))):
        picked, seconds, peak = timed(fn)
        runs[(name, rows)] = (picked, seconds)
        print(f"| {name} | {rows:,} | {len(picked.kept):,} | {int((picked.status == 2).sum()):,} | {seconds:.2f} | "
              f"{peak / 2**20:.0f} |")
    ours, loop = runs[("blocked (ours)", args.loop_rows)], runs[("numpy loop", args.loop_rows)]
    assert np.array_equal(ours[0].status, loop[0].status), "the two selections differ"
    print(f"\nsame rows picked on {args.loop_rows:,}: yes; blocked is {loop[1] / ours[1]:.1f}x the loop's speed")


if __name__ == "__main__":
    main()
