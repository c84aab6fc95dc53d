"""Deduplication: id, messages -> the same rows, duplicates dropped with the id of the row kept.

ExactDedup keeps the first row of each `id`. MinHashDedup (datasketch MinHash + LSH, word 5-gram shingles over
lowercased text with punctuation folded, 128 permutations) clusters rows whose estimated Jaccard similarity
reaches `threshold` and keeps one per cluster: the longest text, then the smallest id. A faster, measured
MinHash with a persistent index replaces this stage later; the stage contract stays.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import polars as pl
from datasketch import MinHash, MinHashLSH

from pipelines.stage import Context, Stage, with_drops

NON_WORD = re.compile(r"[^\w\s]+")


def conversation_text(messages: list[dict]) -> str:
    return "\n".join(m["content"] for m in messages)


def shingles(text: str, n: int = 5) -> set[str]:
    """Word n-grams of normalized text: 'The cat, the CAT sat' with n=2 -> {'the cat', 'cat the', 'cat sat'}."""
    words = NON_WORD.sub(" ", text.lower()).split()
    if len(words) <= n:
        return {" ".join(words)}
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


@dataclass
class ExactDedup(Stage):
    name = "dedup_exact"
    requires = ("id",)

    def run(self, batches, ctx: Context):
        seen: set[str] = set()
        for batch in batches:
            reasons = []
            for row_id in batch["id"].to_list():
                reasons.append(f"exact_duplicate: of {row_id}" if row_id in seen else None)
                seen.add(row_id)
            yield with_drops(batch, reasons)


@dataclass
class MinHashDedup(Stage):
    threshold: float = 0.8
    num_perm: int = 128
    ngram: int = 5
    name = "dedup_minhash"
    requires = ("id", "messages")

    def run(self, batches, ctx: Context):
        frames = [b for b in batches if b.height]
        if not frames:
            return
        data = pl.concat(frames, how="diagonal_relaxed")
        texts = [conversation_text(m) for m in data["messages"].to_list()]
        ids = data["id"].to_list()
        lsh = MinHashLSH(threshold=self.threshold, num_perm=self.num_perm)
        parent = list(range(len(ids)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i, text in enumerate(texts):
            sig = MinHash(num_perm=self.num_perm, seed=1)
            sig.update_batch([s.encode() for s in shingles(text, self.ngram)])
            for j in lsh.query(sig):
                parent[find(int(j))] = find(i)
            lsh.insert(str(i), sig)
        best: dict[int, int] = {}
        for i in range(len(ids)):
            root, rank = find(i), (-len(texts[i]), ids[i])
            if root not in best or rank < (-len(texts[best[root]]), ids[best[root]]):
                best[root] = i
        reasons = [None if best[find(i)] == i else f"near_duplicate: of {ids[best[find(i)]]}" for i in range(len(ids))]
        sizes = Counter(find(i) for i in range(len(ids)))
        ctx.count("near_duplicate_clusters", sum(1 for size in sizes.values() if size > 1))
        yield with_drops(data, reasons)
