"""Measured recall: plant edited copies of real texts and count how many the settings in use find.

`edit_words` makes a copy of a text by replacing, deleting and inserting words at a given rate. `planted_recall`
copies a sample of a run's own texts at rates spread so the true (exact) Jaccard similarities cover 0.6-1.0, runs
signatures, LSH, verification and clustering on originals + copies exactly as the stage does, and reports the share
of pairs found among those with true Jaccard >= 0.8 and >= 0.9.
"""

from __future__ import annotations

import random

import numpy as np

from pipelines.dedup.lsh import components, pairs_of_texts
from pipelines.dedup.minhash import MinHashParams, jaccard, shingle_hashes

MAX_EDIT_RATE = 0.05


def edit_words(text: str, rate: float, rng: random.Random, vocabulary: list[str]) -> str:
    """A copy of `text` with about `rate` of its words replaced, deleted or followed by an inserted word."""
    words = text.split()
    out = []
    for word in words:
        if rng.random() >= rate:
            out.append(word)
            continue
        action = rng.randrange(3)
        if action == 0:
            out.append(rng.choice(vocabulary))
        elif action == 2:
            out.extend((word, rng.choice(vocabulary)))
    return " ".join(out)


def planted_recall(texts: list[str], params: MinHashParams, threshold: float, seed: int = 0) -> dict:
    """{"pairs", "pairs_at_0.8", "recall_at_0.8", "pairs_at_0.9", "recall_at_0.9"} on copies of `texts`."""
    texts = [t for t in texts if len(t.split()) >= 4 * params.ngram]
    if not texts:
        return {"pairs": 0}
    rng = random.Random(seed)
    vocabulary = sorted({w for t in texts for w in t.split()})
    copies = [edit_words(t, rng.uniform(0, MAX_EDIT_RATE), rng, vocabulary) for t in texts]
    both = texts + copies
    n = len(texts)
    hashes, offsets = shingle_hashes(both, params.ngram)
    truth = np.array([jaccard(hashes[offsets[i]:offsets[i + 1]], hashes[offsets[n + i]:offsets[n + i + 1]])
                      for i in range(n)])
    labels = components(len(both), pairs_of_texts(both, params, threshold))
    found = labels[:n] == labels[n:]
    out = {"pairs": n}
    for level in (0.8, 0.9):
        mask = truth >= level
        out[f"pairs_at_{level}"] = int(mask.sum())
        out[f"recall_at_{level}"] = round(float(found[mask].mean()), 4) if mask.any() else None
    return out
