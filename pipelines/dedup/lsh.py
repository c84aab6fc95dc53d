"""LSH over MinHash signatures: band keys, verified similar pairs, clusters, and which row each cluster keeps.

Band b of a signature is rows `b*r .. b*r+r-1`, hashed to one 64-bit key. Documents whose keys agree in any band are
candidates; a candidate pair is kept when its signatures agree in at least `threshold * num_perm` positions (the
estimated Jaccard similarity reaches the threshold). Candidates come from sorting each band's keys, not from
dictionaries: a run of equal keys is a bucket. Buckets of up to `ALL_PAIRS_UP_TO` documents compare every pair;
larger ones (templated text) compare each member with the bucket's first and with its neighbour, which keeps the
work linear and still joins a cluster of copies.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipelines.dedup.minhash import MinHashParams, signatures

ALL_PAIRS_UP_TO = 64
KEY_PRIME = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(parallel=True, cache=True)
def band_keys(sigs, bands, rows):
    """`uint64[n, bands]` keys of `uint32[n, num_perm]` signatures."""
    n = sigs.shape[0]
    keys = np.empty((n, bands), dtype=np.uint64)
    for d in numba.prange(n):
        for band in range(bands):
            h = np.uint64(band + 1)
            for r in range(band * rows, band * rows + rows):
                h = (h ^ np.uint64(sigs[d, r])) * KEY_PRIME
            h ^= h >> np.uint64(29)
            keys[d, band] = h
    return keys


@numba.njit(inline="always")
def _similar(sigs, i, j, active, old, need):
    if not (active[i] and active[j]) or (old[i] and old[j]):
        return False
    equal = 0
    for p in range(sigs.shape[1]):
        if sigs[i, p] == sigs[j, p]:
            equal += 1
    return equal >= need


@numba.njit(cache=True)
def _bucket_pairs(order, sorted_keys, sigs, active, old, need, cap):
    """Verified pairs (i < j) among documents whose keys are equal in this band."""
    n = order.shape[0]
    budget, start = 0, 0
    while start < n:  # first pass: room for every comparison
        end = start + 1
        while end < n and sorted_keys[end] == sorted_keys[start]:
            end += 1
        m = end - start
        budget += m * (m - 1) // 2 if m <= cap else 2 * m
        start = end
    out = np.empty((budget, 2), dtype=np.int64)
    found, start = 0, 0
    while start < n:
        end = start + 1
        while end < n and sorted_keys[end] == sorted_keys[start]:
            end += 1
        small = end - start <= cap
        for x in range(start + 1, end):
            lo = start if small else max(start + 1, x - 1)  # a large bucket: its first member and the neighbour
            for y in range(lo, x):
                i, j = order[x], order[y]
                if _similar(sigs, i, j, active, old, need):
                    out[found, 0], out[found, 1] = min(i, j), max(i, j)
                    found += 1
            if not small and _similar(sigs, order[x], order[start], active, old, need):
                out[found, 0], out[found, 1] = min(order[x], order[start]), max(order[x], order[start])
                found += 1
        start = end
    return out[:found]


def min_equal(threshold: float, num_perm: int) -> int:
    """Positions two signatures must share for an estimated Jaccard >= threshold."""
    return math.ceil(threshold * num_perm - 1e-9)


def similar_pairs(sigs: np.ndarray, keys: np.ndarray, threshold: float, active: np.ndarray | None = None,
                  old: np.ndarray | None = None) -> np.ndarray:
    """Unique verified pairs `int64[m, 2]` (i < j). `active` False: take no part (no words); `old` True for both:
    skip (rows of a persistent index were deduplicated when they were added)."""
    def by_band():
        for band in range(keys.shape[1]):
            order = np.argsort(keys[:, band], kind="stable")
            yield order, keys[order, band]

    return verify_buckets(by_band(), sigs, threshold, active, old)


def verify_buckets(buckets, sigs: np.ndarray, threshold: float, active: np.ndarray | None = None,
                   old: np.ndarray | None = None) -> np.ndarray:
    """Unique verified pairs among candidate buckets, given as `(order, sorted_keys)` runs: rows `order[s:e]` are a
    bucket when `sorted_keys[s:e]` are equal, in ascending row order (a stable sort of band keys gives that).
    `order=[4, 9, 2, 7], sorted_keys=[5, 5, 8, 8]` -> buckets {4, 9} and {2, 7}."""
    n = len(sigs)
    active = np.ones(n, dtype=np.bool_) if active is None else active
    old = np.zeros(n, dtype=np.bool_) if old is None else old
    need = min_equal(threshold, sigs.shape[1])
    found = [_bucket_pairs(order, sorted_keys, sigs, active, old, need, ALL_PAIRS_UP_TO)
             for order, sorted_keys in buckets]
    pairs = np.concatenate(found) if found else np.empty((0, 2), dtype=np.int64)
    if not len(pairs):
        return pairs
    flat = np.unique(pairs[:, 0] * n + pairs[:, 1])
    return np.column_stack([flat // n, flat % n])


def pairs_of_texts(texts, params: MinHashParams, threshold: float) -> np.ndarray:
    """Verified similar pairs among raw texts: signatures, band keys and `similar_pairs` in one call."""
    sigs, counts = signatures(texts, params)
    return similar_pairs(sigs, band_keys(sigs, params.bands, params.rows), threshold, active=counts > 0)


def candidate_pairs(rows: np.ndarray, sorted_keys: np.ndarray, old: np.ndarray) -> np.ndarray:
    """The pairs `verify_buckets` would compare, unverified, for buckets given as one `(rows, sorted_keys)` run with
    rows ascending within a bucket; `old[i]` True when `rows[i]` is indexed (two indexed rows are never a pair).
    The distributed plan (`pipelines.engines.near`) finds them where the band keys are and verifies them where the
    signatures are."""
    members, local = np.unique(rows, return_inverse=True)
    no_positions = np.empty((len(members), 0), dtype=np.uint32)  # no positions to compare: every candidate passes
    is_old = np.zeros(len(members), dtype=np.bool_)
    is_old[local[old]] = True
    found = _bucket_pairs(local.astype(np.int64), sorted_keys, no_positions, np.ones(len(members), np.bool_), is_old,
                          0, ALL_PAIRS_UP_TO)
    return members[found] if len(found) else np.empty((0, 2), dtype=np.int64)


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Cluster label per document: the smallest document of its connected component in the pair graph (scipy)."""
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    labels = connected_components(graph, directed=False)[1]
    smallest = np.full(labels.max() + 1 if n else 0, n, dtype=np.int64)
    np.minimum.at(smallest, labels, np.arange(n))
    return smallest[labels]


def large_star(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One large-star step (Kiveris et al., "Connected Components in MapReduce and Beyond", 2014) over the edges of
    some nodes `u`, each edge given in both directions: each u links its larger neighbours to the smallest of u and
    its neighbours. Returns the new edges, one direction each."""
    smallest = _smallest_neighbour(u, v)
    larger = v > u
    return v[larger], smallest[larger]


def small_star(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One small-star step: each u with smaller neighbours links itself and them to the smallest of them."""
    smaller = v < u
    u, v = u[smaller], v[smaller]
    smallest = _smallest_neighbour(u, v)
    nodes, first = np.unique(u, return_index=True)
    a, b = np.concatenate([v, nodes]), np.concatenate([smallest, smallest[first]])
    differ = a != b
    return a[differ], b[differ]


def _smallest_neighbour(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per edge, the smallest of its `u` and every neighbour of that `u`."""
    if not len(u):
        return u
    order = np.argsort(u, kind="stable")
    su, sv = u[order], v[order]
    starts = np.flatnonzero(np.r_[True, su[1:] != su[:-1]])
    smallest = np.minimum(np.minimum.reduceat(sv, starts), su[starts])
    out = np.empty_like(u)
    out[order] = np.repeat(smallest, np.diff(np.r_[starts, len(su)]))
    return out


def keepers(labels: np.ndarray, lengths: np.ndarray, ids, old: np.ndarray | None = None) -> np.ndarray:
    """For each document, the index of the document its cluster keeps: an indexed (old) one if the cluster has
    one, else the longest, then the smallest id (then the first row)."""
    n = len(labels)
    if not n:
        return np.empty(0, dtype=np.int64)
    frame = pl.DataFrame({"label": labels, "new": np.ones(n, np.bool_) if old is None else ~old,
                          "length": -np.asarray(lengths, dtype=np.int64), "id": ids, "row": np.arange(n)})
    chosen = frame.sort(["label", "new", "length", "id", "row"]).group_by("label", maintain_order=True).agg(
        pl.col("row").first().alias("keeper"))
    keeper_of_label = np.empty(labels.max() + 1, dtype=np.int64)
    keeper_of_label[chosen["label"].to_numpy()] = chosen["keeper"].to_numpy()
    return keeper_of_label[labels]


def detection_probability(jaccard: float, bands: int, rows: int) -> float:
    """Chance that a pair with this Jaccard similarity shares at least one band: 1 - (1 - J^r)^b."""
    return 1 - (1 - jaccard**rows) ** bands
