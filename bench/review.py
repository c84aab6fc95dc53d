"""The review app on a big stage: a million rows open and page in well under a second; and the dedup page on two
20,000-word looping near-duplicates, which must not hold the other pages up.

    python bench/review.py [--rows 1000000]      # --rows 0: the dedup case only

Writes a stage of `--rows` kept conversations (10 Parquet parts, two turns each, a source and a score) plus 5% as
many dropped rows with their reasons, then times what a reviewer does: open the stage (first page, with the drop
reasons and sources to filter by), jump to the last page, filter by a drop reason, search the text, sort by the
score; each through the app over HTTP (Starlette's TestClient: routing, query, template) and, for the first page,
against reading the stage eagerly (`polars.read_parquet` of every part, then a slice) as the ratio.

The dedup case builds a real `dedup` run of two looping answers (20,000 and 19,990 words, one cluster), serves it
with `python -m pipelines.review` (uvicorn, as a user runs it), and times the dedup page alone and the run page
asked while the dedup page is being made; against the diff the app made before it was bounded (difflib over the
whole texts) as the ratio.
"""

from __future__ import annotations

import argparse
import difflib
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.core.stage import DROP, MESSAGES  # noqa: E402

WORDS = ("explain the river tide of a garden protein budget engine poem about winter light proof number city code "
         "write list three reasons history science music travel").split()


def make_stage(folder: Path, rows: int, parts: int = 10) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    per = rows // parts
    for k in range(parts):
        words = rng.choice(WORDS, size=(per, 12))
        asks = [" ".join(w) for w in words[:, :6]]
        answers = [" ".join(w) for w in words]
        messages = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}]
                    for q, a in zip(asks, answers)]
        pl.DataFrame({"id": [f"r{k}-{i}" for i in range(per)], "messages": pl.Series(messages, dtype=MESSAGES),
                      "source": rng.choice(["alpaca.jsonl", "dolly.jsonl", "sharegpt.json"], per),
                      "reward": rng.normal(6, 1.5, per).round(2)}).write_parquet(
            folder / f"part-{k:05d}.parquet", row_group_size=50_000)
    dropped = rows // 20
    words = rng.choice(WORDS, size=(dropped, 8))
    pl.DataFrame({"id": [f"d{i}" for i in range(dropped)],
                  "messages": pl.Series([[{"role": "user", "content": " ".join(w)}] for w in words], dtype=MESSAGES),
                  "source": "alpaca.jsonl", "reward": 1.0,
                  DROP: rng.choice(["near_duplicate: of r0-1 (J 0.91)", "too_short: 3 words", "language: de"],
                                   dropped)}).write_parquet(folder / "dropped.parquet")


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def dedup_case(folder: Path) -> None:
    """The dedup page on two 20,000-word looping near-duplicates, over HTTP on a live server."""
    loop = "I am sorry but I cannot help with that request because it loops".split()
    texts = [" ".join(loop[i % len(loop)] for i in range(n)) for n in (20_000, 19_990)]
    source = folder / "loop.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in (*texts, "something else entirely")))
    run_dir = folder / "loop"
    subprocess.run([sys.executable, "-m", "pipelines.build", "dedup", "--run-dir", str(run_dir), "--set",
                    f"sources={source}", "--set", "kind=text"], cwd=ROOT, check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.review", str(run_dir)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        url = next(line.split()[1] for line in proc.stdout if line.startswith("open "))

        def get(path: str) -> float:
            started = time.perf_counter()
            urllib.request.urlopen(url + path, timeout=300).read()
            return time.perf_counter() - started

        for _ in range(50):
            try:
                get("static/review.css")
                break
            except OSError:
                time.sleep(0.1)
        alone = timed(lambda: get("dedup"))
        waits = []
        for _ in range(3):
            slow = threading.Thread(target=get, args=("dedup",))
            slow.start()
            time.sleep(0.02)
            waits.append(get(""))
            slow.join()
    finally:
        proc.terminate()
        proc.wait()
    a, b = texts[0].split(), texts[1].split()
    unbounded = timed(lambda: difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes(), 1)
    print("| dedup page, two 20,000-word looping near-duplicates | seconds |")
    print("|---|---|")
    print(f"| the dedup page (best of 3) | {alone:.3f} |")
    print(f"| the run page asked while the dedup page is made (worst of 3) | {max(waits):.3f} |")
    print(f"| the unbounded word diff of the two texts (the app before, baseline) | {unbounded:.3f} |")
    print(f"\nthe dedup page: {unbounded / alone:.1f}x faster than its diff alone used to take\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    from starlette.testclient import TestClient

    from pipelines.review.app import create_app

    run_dir = Path(tempfile.mkdtemp(prefix="bench-review-"))
    dedup_case(run_dir)
    if not args.rows:
        return
    started = time.perf_counter()
    make_stage(run_dir / "00_big", args.rows)
    print(f"stage of {args.rows:,} kept + {args.rows // 20:,} dropped rows written in "
          f"{time.perf_counter() - started:.1f} s")
    web = TestClient(create_app(run_dir, "t", {"testserver"}))
    last = -(-(args.rows + args.rows // 20) // 20)
    cases = [("open the stage (page 1, facets)", "/stage/big"),
             (f"last page ({last:,})", f"/stage/big?page={last}"),
             ("filter: drop reason", "/stage/big?status=dropped&reason=too_short"),
             ("search the text", "/stage/big?q=winter+light+proof"),
             ("sort by reward, descending", "/stage/big?sort=reward&desc=1"),
             ("filter: source and reward >= 8", "/stage/big?source=dolly.jsonl&score=reward&score_min=8")]
    print("| what | seconds (best of 3) |")
    print("|---|---|")
    for name, path in cases:
        assert web.get(path).status_code == 200, path
        print(f"| {name} | {timed(lambda: web.get(path)):.3f} |")
    files = sorted((run_dir / "00_big").glob("*.parquet"))
    eager = timed(lambda: pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed").slice(0, 20), 1)
    lazy = timed(lambda: web.get("/stage/big"))
    print(f"| eager read of the stage, then page 1 (the baseline) | {eager:.3f} |")
    print(f"\nopening the stage: {eager / lazy:.1f}x faster than reading it whole")


if __name__ == "__main__":
    main()
