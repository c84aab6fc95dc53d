"""Self-Instruct's ROUGE-L novelty screen: one new instruction against a pool, ours against rouge-score.

    python bench/rouge.py [--pool 50000] [--queries 200] [--sample 2000]

Pool: real instructions (alpaca_eval, GPTeacher, GSM8K questions, hh-rlhf first turns, ShareGPT first turns, the
Self-Instruct seeds from ../shared/data/real), cut to their first 60 words and edited (about 30% of words replaced by
words of the corpus, some deleted, some inserted, clauses of two instructions spliced), so the pool looks like
instructions but holds many distinct ones. Queries: half fresh edits of real instructions (mostly novel), half light
edits of pool entries (near-copies, rejected at 0.7). Every contender answers the same question: the highest
ROUGE-L F-measure of the query against the pool and whether it exceeds 0.7.

Contenders:
- ours: `pipelines.dedup.rouge.RougePool.most_similar` (query tokenized per call; pool tokenized once), 1 thread.
- rouge-score as Self-Instruct calls it: `RougeScorer(["rougeL"]).score(new, old)` per pool entry (tokenizes both).
- rouge-score pre-tokenized as Alpaca's `generate_instruction.py` does: `rouge_scorer._score_lcs(new, old)` per
  entry on tokens computed once (Alpaca spreads this over a process pool; per core it is the same).
rouge-score runs on a random subsample of `--sample` pool entries and its time is extrapolated linearly to the pool
size (its cost is one LCS per entry, so it is linear); its answers on the subsample are checked against ours.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines.dedup.rouge import RougePool, tokenize  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "real"
THRESHOLD = 0.7


def real_instructions() -> list[str]:
    texts = [r["instruction"] for r in json.loads((REAL / "alpaca_eval_example_outputs.json").read_text())]
    texts += [r["instruction"] for r in json.loads((REAL / "gpteacher_roleplay_alpaca_format.json").read_text())]
    texts += [json.loads(line)["question"] for line in (REAL / "gsm8k_test.jsonl").open()]
    texts += [json.loads(line)["instruction"] for line in (REAL / "self_instruct_seed_tasks.jsonl").open()]
    with gzip.open(REAL / "hh_rlhf_harmless_base_test.jsonl.gz", "rt") as f:
        texts += [json.loads(line)["chosen"].split("\n\nHuman: ", 1)[1].split("\n\nAssistant:", 1)[0] for line in f]
    for conv in json.loads((REAL / "sharegpt_dummy_conversation.json").read_text()):
        texts += [t["value"] for t in conv["conversations"][:1] if t["from"] == "human"]
    cut = [" ".join(t.split()[:60]) for t in texts]
    return sorted({t for t in cut if len(t.split()) >= 4})


def edit(text: str, words: list[str], rng: random.Random, rate: float) -> str:
    """Replace, delete or insert about `rate` of the words."""
    out = []
    for w in text.split():
        x = rng.random()
        if x < rate * 0.6:
            out.append(rng.choice(words))
        elif x < rate * 0.8:
            continue
        elif x < rate:
            out += [w, rng.choice(words)]
        else:
            out.append(w)
    return " ".join(out) or rng.choice(words)


def splice(a: str, b: str, rng: random.Random) -> str:
    wa, wb = a.split(), b.split()
    return " ".join(wa[: max(2, len(wa) // 2)] + wb[len(wb) // 2:])


def make_data(n_pool: int, n_queries: int, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    rng = random.Random(seed)
    base = real_instructions()
    words = [w for t in base for w in re.findall(r"[A-Za-z']+", t)]
    pool = []
    for i in range(n_pool):
        text = base[i % len(base)]
        if rng.random() < 0.3:
            text = splice(text, rng.choice(base), rng)
        pool.append(edit(text, words, rng, 0.3))
    novel = [edit(rng.choice(base), words, rng, 0.3) for _ in range(n_queries // 2)]
    near = [edit(rng.choice(pool), words, rng, 0.05) for _ in range(n_queries - len(novel))]
    return base, pool, novel + near


def ours(pool: list[str], queries: list[str]) -> tuple[float, list, int]:
    """Seconds per query (best of 3 passes: the machine is shared), answers, LCS tables computed per pass."""
    index = RougePool()
    index.extend(pool, [str(i) for i in range(len(pool))])
    index.most_similar(queries[0], THRESHOLD)  # compile or load the kernels before the clock
    index.computed, times = 0, []
    for _ in range(3):
        started = time.perf_counter()
        answers = [index.most_similar(q, THRESHOLD) for q in queries]
        times.append(time.perf_counter() - started)
    return min(times) / len(queries), answers, index.computed // 3


def rouge_score_per_pair(sample: list[str], queries: list[str]) -> tuple[float, list]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    started = time.perf_counter()
    best = [max(scorer.score(q, old)["rougeL"].fmeasure for old in sample) for q in queries]
    return (time.perf_counter() - started) / len(queries), best


def rouge_score_pretokenized(sample: list[str], queries: list[str]) -> tuple[float, list]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    tokens = [scorer._tokenizer.tokenize(old) for old in sample]
    started = time.perf_counter()
    best = []
    for q in queries:
        new = scorer._tokenizer.tokenize(q)
        best.append(max(rouge_scorer._score_lcs(new, old).fmeasure for old in tokens))
    return (time.perf_counter() - started) / len(queries), best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pool", type=int, nargs="+", default=[1_000, 10_000, 50_000])
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--sample", type=int, default=2_000, help="pool entries rouge-score scores (then extrapolated)")
    p.add_argument("--peer-queries", type=int, default=40, help="queries rouge-score answers (of --queries)")
    args = p.parse_args()
    base, full, queries = make_data(max(args.pool), args.queries)
    print(f"{len(base)} real instructions; pool entries {np.mean([len(tokenize(t)) for t in full]):.1f} tokens on "
          f"average; {len(queries)} queries ({len(queries) // 2} novel, {len(queries) - len(queries) // 2} "
          f"near-copies)\n")
    rng = random.Random(1)
    peer_queries = rng.sample(queries, min(args.peer_queries, len(queries)))
    print("| pool size | contender | ms per new instruction | rejected at 0.7 | LCS tables per query | ours faster |")
    print("|---|---|---|---|---|---|")
    for size in args.pool:
        pool = full[:size]
        sample = rng.sample(pool, min(args.sample, size))
        scale = size / len(sample)
        seconds, answers, computed = ours(pool, queries)
        rejected = f"{sum(a[0] is not None for a in answers)}/{len(queries)}"
        print(f"| {size:,} | ours (numba, 1 thread) | {seconds * 1000:.3f} | {rejected} | "
              f"{computed / len(queries):,.1f} of {size:,} | 1x |")
        # Check: on the subsample, our best score equals rouge-score's for every peer query.
        sub = RougePool()
        sub.extend(sample, [str(i) for i in range(len(sample))])
        per_pair, best_pp = rouge_score_per_pair(sample, peer_queries)
        pretok, best_pt = rouge_score_pretokenized(sample, peer_queries)
        mine = [float(sub.scores(q).max()) for q in peer_queries]
        assert mine == best_pp == best_pt, "scores differ from rouge-score"
        assert [(b > THRESHOLD) for b in mine] == [sub.most_similar(q, THRESHOLD)[0] is not None
                                                   for q in peer_queries]
        note = f" (extrapolated from {len(sample):,})" if scale > 1 else ""
        for label, peer in (("rouge-score `.score()` per pair (as Self-Instruct)", per_pair),
                            ("rouge-score `_score_lcs`, pre-tokenized (as Alpaca)", pretok)):
            print(f"| {size:,} | {label} | {peer * scale * 1000:,.1f}{note} | - | {size:,} | "
                  f"{peer * scale / seconds:,.0f}x |")
    print("\nrouge-score answers on its subsample equal ours exactly (every best score, every decision at 0.7).")


if __name__ == "__main__":
    main()
