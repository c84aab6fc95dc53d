"""MinHash signatures of word n-gram shingles, compiled with numba and parallel over documents.

One compiled pass per document decodes the UTF-8, lowercases, splits words (runs of letters, digits, marks and `_`;
punctuation and whitespace separate them), hashes each word (FNV-1a 64 over code points, splitmix64 finalizer),
hashes every window of `ngram` words into a 64-bit shingle hash, and keeps, for each of the `num_perm` permutations,
the minimum of the 32-bit affine hash `(a * shingle + b) >> 32` (multiply-shift over 64-bit words). A document with
fewer words than `ngram` has one shingle: all its words. A document with no words has no shingles (count 0) and
takes no part in matching.

Why numba rather than numpy broadcasting: for 50M shingles x 128 permutations numpy took 20 s (32-bit) to 40 s
(64-bit) on one core because every step writes a (shingles x 128) temporary; the fused loop takes 1 s.
"""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass

import numba
import numpy as np
import polars as pl
import pyarrow as pa

from pipelines.core.errors import ConfigError

HASH_SCHEME = "fnv1a64-splitmix64 words; polynomial word-window shingles; (a*x+b)>>32 multiply-shift permutations"
NORMALISATION = f"lowercase; words are runs of letters, digits, marks and _ (Unicode {unicodedata.unidata_version})"

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
WINDOW_PRIME = np.uint64(0x9E3779B97F4A7C15)
EMPTY = np.uint32(0xFFFFFFFF)


@dataclass(frozen=True)
class MinHashParams:
    """What makes two signatures comparable; all of it goes into a persistent index's manifest."""

    num_perm: int = 128
    bands: int = 16
    rows: int = 8
    ngram: int = 5
    seed: int = 1

    def __post_init__(self):
        if self.bands * self.rows > self.num_perm:
            raise ConfigError(f"bands x rows ({self.bands} x {self.rows}) exceeds num_perm ({self.num_perm})")
        if self.ngram < 1:
            raise ConfigError(f"ngram must be at least 1, not {self.ngram}")

    def permutations(self) -> tuple[np.ndarray, np.ndarray]:
        """(a, b): `num_perm` odd multipliers and offsets, 64-bit, from `seed`."""
        rng = np.random.default_rng(self.seed)
        a = rng.integers(0, 2**64, self.num_perm, dtype=np.uint64, endpoint=False) | np.uint64(1)
        b = rng.integers(0, 2**64, self.num_perm, dtype=np.uint64, endpoint=False)
        return a, b

    def settings(self) -> dict:
        return {**asdict(self), "hash_scheme": HASH_SCHEME, "shingling": f"word {self.ngram}-grams",
                "normalisation": NORMALISATION}


def _buffers(strings: pa.LargeStringArray) -> tuple[np.ndarray, np.ndarray]:
    """(utf-8 bytes, [start, end) byte span of each string) without copying the text; nulls are empty."""
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    n = len(strings)
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int64)[strings.offset:strings.offset + n + 1]
    data_buffer = strings.buffers()[2]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    if strings.null_count:
        valid = np.asarray(strings.is_valid())
        ends = offsets[1:].copy()
        starts = offsets[:-1].copy()
        ends[~valid] = starts[~valid]
        return data, np.column_stack([starts, ends])
    return data, np.column_stack([offsets[:-1], offsets[1:]])


@numba.njit(inline="always")
def _mix(x):
    """splitmix64 finalizer."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _unicode_tables() -> tuple[np.ndarray, np.ndarray]:
    """(lowercase code point, is word character) for every code point of the Basic Multilingual Plane.

    A word character is a letter, digit, combining mark or underscore, as in the regex class `\\w`; characters
    beyond the BMP are taken as word characters and kept as they are.
    """
    lower = np.arange(0x10000, dtype=np.int32)
    word = np.zeros(0x10000, dtype=np.bool_)
    for code in range(0x10000):
        char = chr(code)
        low = char.lower()
        if len(low) == 1:
            lower[code] = ord(low)
        word[code] = char.isalnum() or char == "_" or unicodedata.category(char).startswith("M")
    return lower, word


LOWER, WORD = _unicode_tables()


@numba.njit(inline="always")
def _decode(data, i, end):
    """(code point, index after it) of the UTF-8 sequence at data[i]."""
    c = np.int64(data[i])
    if c < 0x80 or i + 1 >= end:
        return c, i + 1
    if c >= 0xF0 and i + 3 < end:
        return ((c & 7) << 18) | ((np.int64(data[i + 1]) & 63) << 12) | ((np.int64(data[i + 2]) & 63) << 6) \
            | (np.int64(data[i + 3]) & 63), i + 4
    if c >= 0xE0 and i + 2 < end:
        return ((c & 15) << 12) | ((np.int64(data[i + 1]) & 63) << 6) | (np.int64(data[i + 2]) & 63), i + 3
    if c >= 0xC0:
        return ((c & 31) << 6) | (np.int64(data[i + 1]) & 63), i + 2
    return c, i + 1


@numba.njit
def _doc_shingles(data, start, end, ngram, lower, word, out):
    """Write the shingle hashes of data[start:end] into `out` (room for a hash per two bytes) and say how many."""
    words, i, h, inside = 0, start, FNV_OFFSET, False
    while i < end:
        if data[i] < 0x80:  # ASCII: no decoding
            c = np.int64(data[i])
            i += 1
        else:
            c, i = _decode(data, i, end)
        if c >= 0x10000 or word[c]:
            if c < 0x10000:
                c = lower[c]
            h = (h ^ np.uint64(c)) * FNV_PRIME
            inside = True
        elif inside:
            out[words] = _mix(h)
            words, h, inside = words + 1, FNV_OFFSET, False
    if inside:
        out[words] = _mix(h)
        words += 1
    if words == 0:
        return 0
    size = min(ngram, words)  # a short document is one shingle of all its words
    count = words - size + 1
    for j in range(count):  # in place: shingle j only needs words j..j+size-1, none of them overwritten yet
        x = np.uint64(size)
        for t in range(j, j + size):
            x = x * WINDOW_PRIME + out[t]
        out[j] = _mix(x)
    return count


@numba.njit(parallel=True, cache=True)
def _signatures(data, spans, ngram, a, b, lower, word, chunks):
    """`chunks`: groups of documents, one scratch buffer each (not one per document)."""
    n, k = spans.shape[0], a.shape[0]
    sigs = np.full((n, k), EMPTY, dtype=np.uint32)
    counts = np.zeros(n, dtype=np.int64)
    shift = np.uint64(32)
    chunks = max(1, min(n, chunks))
    for c in numba.prange(chunks):
        first, last = c * n // chunks, (c + 1) * n // chunks
        longest = 0
        for d in range(first, last):
            longest = max(longest, spans[d, 1] - spans[d, 0])
        hashes = np.empty(longest // 2 + 2, dtype=np.uint64)
        for d in range(first, last):
            m = _doc_shingles(data, spans[d, 0], spans[d, 1], ngram, lower, word, hashes)
            row = sigs[d]
            for s in range(m):
                x = hashes[s]
                for p in range(k):
                    v = np.uint32((a[p] * x + b[p]) >> shift)
                    if v < row[p]:
                        row[p] = v
            counts[d] = m
    return sigs, counts


@numba.njit(parallel=True, cache=True)
def _all_shingles(data, spans, ngram, lower, word, slots, out):
    counts = np.zeros(spans.shape[0], dtype=np.int64)
    for d in numba.prange(spans.shape[0]):
        counts[d] = _doc_shingles(data, spans[d, 0], spans[d, 1], ngram, lower, word, out[slots[d]:slots[d + 1]])
    return counts


def _prepared(texts) -> tuple[np.ndarray, np.ndarray]:
    strings = pa.array(texts, type=pa.large_string()) if isinstance(texts, list) else \
        texts.cast(pl.String).to_arrow().cast(pa.large_string())
    return _buffers(strings)


def signatures(texts, params: MinHashParams) -> tuple[np.ndarray, np.ndarray]:
    """(signatures `uint32[n, num_perm]`, shingle counts `int64[n]`) of raw texts (a list or a polars Series)."""
    data, spans = _prepared(texts)
    a, b = params.permutations()
    return _signatures(data, spans, params.ngram, a, b, LOWER, WORD, 64 * numba.get_num_threads())


def shingle_hashes(texts, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """(all 64-bit shingle hashes, offsets `int64[n + 1]`): document d owns `hashes[offsets[d]:offsets[d + 1]]`.

    A document shorter than `ngram` words has one shingle (its words); an empty one has none.
    """
    data, spans = _prepared(texts)
    slots = np.zeros(len(spans) + 1, dtype=np.int64)
    np.cumsum((spans[:, 1] - spans[:, 0]) // 2 + 2, out=slots[1:])
    out = np.empty(slots[-1], dtype=np.uint64)
    counts = _all_shingles(data, spans, ngram, LOWER, WORD, slots, out)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    keep = np.arange(slots[-1]) - np.repeat(slots[:-1], np.diff(slots)) < np.repeat(counts, np.diff(slots))
    return out[keep], offsets


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two arrays of shingle hashes taken as sets."""
    a, b = np.unique(a), np.unique(b)
    union = len(np.union1d(a, b))
    return len(np.intersect1d(a, b, assume_unique=True)) / union if union else 1.0


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    return float(np.mean(sig_a == sig_b))
