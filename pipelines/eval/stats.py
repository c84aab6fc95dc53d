"""Bootstrap confidence intervals: a mean's, and a paired difference's (the same items scored for two models)."""

from __future__ import annotations

import numpy as np

ROUNDS = 2000


def mean_ci(values: list[float], rounds: int = ROUNDS, seed: int = 0) -> tuple[float, float, float]:
    """(mean, 2.5th and 97.5th percentiles of the bootstrap means); NaNs for no values."""
    data = np.asarray(values, dtype=float)
    if not data.size:
        return float("nan"), float("nan"), float("nan")
    draws = np.random.default_rng(seed).integers(0, data.size, size=(rounds, data.size))
    means = data[draws].mean(axis=1)
    return float(data.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def paired_ci(model: list[float], baseline: list[float], rounds: int = ROUNDS,
              seed: int = 0) -> tuple[float, float, float]:
    """The mean of per-item differences (model - baseline) with its paired-bootstrap 95% CI."""
    if len(model) != len(baseline):
        raise ValueError("paired scores need the same items")
    return mean_ci([m - b for m, b in zip(model, baseline)], rounds, seed)


def ratio_ci(numerators: list[float], denominators: list[float], rounds: int = ROUNDS,
             seed: int = 0) -> tuple[float, float, float]:
    """sum(numerators) / sum(denominators), with a 95% CI from resampling items (each item's pair together): the
    instruction-level accuracy of items holding several instructions each."""
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    if not den.sum():
        return float("nan"), float("nan"), float("nan")
    draws = np.random.default_rng(seed).integers(0, den.size, size=(rounds, den.size))
    ratios = num[draws].sum(axis=1) / np.maximum(den[draws].sum(axis=1), 1e-12)
    return float(num.sum() / den.sum()), float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def rounded(ci: tuple[float, float, float]) -> list[float | None]:
    """A CI for JSON: 4 decimals, None for NaN."""
    return [None if v != v else round(v, 4) for v in ci]


def ci_text(ci) -> str:
    """`0.300 (0.225-0.375)`, or `-` for no value."""
    return "-" if not ci or ci[0] is None else f"{ci[0]:.3f} ({ci[1]:.3f}-{ci[2]:.3f})"


def beyond(ci: tuple[float, float, float]) -> bool:
    """Whether a difference's CI excludes zero."""
    return ci[1] > 0 or ci[2] < 0
