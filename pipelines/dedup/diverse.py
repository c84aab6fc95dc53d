"""Score-first, diversity-aware selection (DEITA's "Repr Filter"): walk the rows best score first and take a row
only when its cosine distance to every row already taken is at least `min_distance`, until `keep` are taken.

`select_diverse` gives exactly what that one-row-at-a-time loop gives (`select_loop`, the oracle), in blocks: a block
of candidates is compared with every row taken so far in one matrix product, and only the candidates that pass are
then settled one by one against the rows taken earlier in the same block (a small matrix computed once). Vectors
must be L2-normalised (cosine = dot product). Memory: the vectors, the taken rows, and one block's products.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOO_CLOSE, NOT_REACHED, KEPT = 2, 0, 1


@dataclass
class Selection:
    status: np.ndarray  # per row: KEPT, TOO_CLOSE (with `nearest` and `cosine`) or NOT_REACHED (the quota was full)
    nearest: np.ndarray  # the taken row a too-close row was closest to, else -1
    cosine: np.ndarray  # that cosine, else nan

    @property
    def kept(self) -> np.ndarray:
        return np.flatnonzero(self.status == KEPT)


def _empty(n: int) -> Selection:
    return Selection(np.full(n, NOT_REACHED, np.int8), np.full(n, -1, np.int64), np.full(n, np.nan, np.float32))


def select_diverse(vectors: np.ndarray, order: np.ndarray, keep: int, min_distance: float,
                   block: int = 2048) -> Selection:
    """Rows of `vectors` taken in `order` (best first), at most `keep`, each at cosine distance >= `min_distance`
    from every row taken before it."""
    n, width = vectors.shape
    out = _empty(n)
    limit = 1.0 - min_distance  # the highest cosine a new row may have to a taken one
    taken = np.empty((min(keep, n), width), np.float32)
    taken_ids = np.empty(min(keep, n), np.int64)
    count = 0
    for start in range(0, n, block):
        if count >= keep:
            break
        ids = order[start:start + block]
        block_vectors = vectors[ids]
        if count and min_distance > 0:
            sims = block_vectors @ taken[:count].T
            best = sims.argmax(axis=1)
            best_cos = sims[np.arange(len(ids)), best]
        else:
            best, best_cos = np.zeros(len(ids), np.int64), np.full(len(ids), -np.inf, np.float32)
        passing = np.flatnonzero(best_cos <= limit)
        within = block_vectors[passing] @ block_vectors[passing].T if min_distance > 0 else None
        place = {int(j): p for p, j in enumerate(passing)}  # a passing candidate's row in `within`
        chosen: list[int] = []  # rows of `within` taken in this block
        for j in range(len(ids)):  # in order, so the quota stops exactly where the loop stops
            if count >= keep:
                break
            if j not in place:
                out.status[ids[j]], out.nearest[ids[j]] = TOO_CLOSE, taken_ids[best[j]]
                out.cosine[ids[j]] = best_cos[j]
                continue
            p = place[j]
            if chosen and min_distance > 0:
                sims = within[p, chosen]
                k = int(sims.argmax())
                if sims[k] > limit:
                    out.status[ids[j]], out.nearest[ids[j]] = TOO_CLOSE, ids[passing[chosen[k]]]
                    out.cosine[ids[j]] = sims[k]
                    continue
            chosen.append(p)
            taken[count], taken_ids[count] = block_vectors[j], ids[j]
            out.status[ids[j]] = KEPT
            count += 1
    return out


def select_loop(vectors: np.ndarray, order: np.ndarray, keep: int, min_distance: float) -> Selection:
    """The same selection, one row at a time (the oracle of tests and the baseline of bench/diverse_select.py)."""
    out = _empty(len(vectors))
    taken: list[int] = []
    for i in order:
        if len(taken) >= keep:
            break
        if taken and min_distance > 0:
            sims = vectors[taken] @ vectors[i]
            k = int(sims.argmax())
            if sims[k] > 1.0 - min_distance:
                out.status[i], out.nearest[i], out.cosine[i] = TOO_CLOSE, taken[k], sims[k]
                continue
        taken.append(int(i))
        out.status[i] = KEPT
    return out


def semantic_clusters(vectors: np.ndarray, clusters: int, seed: int = 0) -> np.ndarray:
    """The k-means cluster of each row (SemDeDup's first step), on unit vectors, k-means++ seeded."""
    from scipy.cluster.vq import kmeans2

    k = max(1, min(clusters, len(vectors)))
    if k == 1:
        return np.zeros(len(vectors), np.int64)
    _, labels = kmeans2(vectors.astype(np.float64), k, minit="++", seed=seed)
    return labels.astype(np.int64)


def semantic_dedup(vectors: np.ndarray, order: np.ndarray, labels: np.ndarray, eps: float) -> Selection:
    """SemDeDup (Abbas et al., 2023): within each cluster, rows in `order` (best first); a row whose cosine to a row
    kept before it in its cluster is above 1 - eps is a duplicate of that row. Every other row is kept."""
    out = _empty(len(vectors))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[np.argsort(rank[members], kind="stable")]
        found = select_diverse(vectors[members], np.arange(len(members)), len(members), eps)
        out.status[members] = found.status
        close = found.nearest >= 0
        out.nearest[members[close]] = members[found.nearest[close]]
        out.cosine[members] = found.cosine
    return out
