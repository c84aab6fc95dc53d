"""A judge's calibration: a monotone map from its raw preference score to P(a person prefers the same answer), fitted
on people's labels, and the numbers that measure it.

- `fit_isotonic(scores, outcomes)`: pool-adjacent-violators, the map as breakpoints (x, y); `apply` interpolates
  between them and holds the ends flat.
- `fit_platt`: a logistic curve in the score (slope held >= 0), as breakpoints too; `fit_constant`: the base rate.
- `fit_map`: whichever of the three predicts held-out labels best (Brier score, 5-fold cross-validation on the
  labels it is given): isotonic steps where there are labels enough to support them, a smooth curve or the base
  rate where there are not, so a map fitted on 80 labels does not promise more than they show.
- `expected_calibration_error`, `reliability`: how far predicted probabilities sit from observed frequencies, in
  equal-width bins (the numbers behind a reliability diagram).
- `Calibration`: the file a recipe reads (`python -m pipelines.judge calibrate --out FILE`): the judge's identity, the
  map, the measured numbers and the digest of the labels; `load` refuses a file made for another judge, in one line.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipelines.core.errors import ConfigError


def fit_isotonic(scores: list[float], outcomes: list[float]) -> tuple[list[float], list[float]]:
    """The non-decreasing step function closest to `outcomes` (least squares) as breakpoints: (xs, ys), one point per
    block of tied scores pooled by PAV."""
    if not scores:
        return [], []
    points: dict[float, list[float]] = {}
    for s, o in zip(scores, outcomes):
        points.setdefault(float(s), []).append(float(o))
    blocks = [[x, x, sum(v), len(v)] for x, v in sorted(points.items())]  # [x_lo, x_hi, sum, count]
    merged: list[list[float]] = []
    for block in blocks:
        merged.append(block)
        while len(merged) > 1 and merged[-2][2] / merged[-2][3] > merged[-1][2] / merged[-1][3]:
            last = merged.pop()
            merged[-1] = [merged[-1][0], last[1], merged[-1][2] + last[2], merged[-1][3] + last[3]]
    xs, ys = [], []
    for lo, hi, total, count in merged:  # a block's value holds from its lowest to its highest score
        xs += [lo] if lo == hi else [lo, hi]
        ys += [total / count] * (1 if lo == hi else 2)
    return xs, ys


def fit_constant(scores: list[float], outcomes: list[float]) -> tuple[list[float], list[float]]:
    """The base rate, whatever the score (a judge that tells nothing)."""
    if not scores:
        return [], []
    return [min(scores)], [sum(outcomes) / len(outcomes)]


def fit_platt(scores: list[float], outcomes: list[float], points: int = 33) -> tuple[list[float], list[float]]:
    """P = sigmoid(a * score + b) by Newton's method (a small ridge keeps it finite on separable labels), slope held
    >= 0 like the isotonic map, as `points` breakpoints over the scores' range."""
    if not scores or min(scores) == max(scores):
        return fit_constant(scores, outcomes)
    a = b = 0.0
    for _ in range(50):
        g_a = g_b = h_aa = h_ab = h_bb = 0.0
        for s, o in zip(scores, outcomes):
            p = 1 / (1 + math.exp(-max(-30.0, min(30.0, a * s + b))))
            w = max(p * (1 - p), 1e-9)
            g_a, g_b = g_a + (p - o) * s, g_b + (p - o)
            h_aa, h_ab, h_bb = h_aa + w * s * s, h_ab + w * s, h_bb + w
        g_a, h_aa, h_bb = g_a + 1e-3 * a, h_aa + 1e-3, h_bb + 1e-9
        det = h_aa * h_bb - h_ab * h_ab
        step_a, step_b = (h_bb * g_a - h_ab * g_b) / det, (h_aa * g_b - h_ab * g_a) / det
        a, b = a - step_a, b - step_b
        if abs(step_a) + abs(step_b) < 1e-9:
            break
    if a <= 0:
        return fit_constant(scores, outcomes)
    lo, hi = min(scores), max(scores)
    xs = [lo + (hi - lo) * k / (points - 1) for k in range(points)]
    return xs, [1 / (1 + math.exp(-max(-30.0, min(30.0, a * x + b)))) for x in xs]


FITS = {"constant": fit_constant, "platt": fit_platt, "isotonic": fit_isotonic}  # simplest first: it wins ties


def fit_map(scores: list[float], outcomes: list[float], folds: int = 5,
            mirror: bool = False) -> tuple[str, list[float], list[float]]:
    """(the method, its breakpoints fitted on all the labels): the fit with the lowest mean Brier score on held-out
    folds (item k in fold k mod `folds`), the simplest on a tie; isotonic with too few labels to cross-validate.
    `mirror`: the score is of A over B and which answer is A was drawn at random, so each fit is also tried on the
    labels mirrored (-score, 1 - outcome) as well: a map through 0.5 at a score of 0, shaped by twice the labels
    (named "... mirrored"); a judge with a lean of its own can still be fitted unmirrored."""
    def fitted(name: str, pairs: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
        if name.endswith(" mirrored"):
            pairs = pairs + [(-s, 1 - o) for s, o in pairs]
        fit = FITS[name.removesuffix(" mirrored")]
        return fit([s for s, _ in pairs], [o for _, o in pairs])

    items = list(zip(scores, outcomes))
    if len(items) < 2 * folds:
        return "isotonic", *fitted("isotonic", items)
    names = [f"{name}{suffix}" for name in FITS for suffix in ([" mirrored", ""] if mirror else [""])]
    brier = {}
    for name in names:
        total = 0.0
        for fold in range(folds):
            xs, ys = fitted(name, [item for k, item in enumerate(items) if k % folds != fold])
            total += sum((apply(xs, ys, s) - o) ** 2 for k, (s, o) in enumerate(items) if k % folds == fold)
        brier[name] = total / len(items)
    best = min(names, key=lambda name: (round(brier[name], 9), names.index(name)))
    return best, *fitted(best, items)


def apply(xs: list[float], ys: list[float], score: float) -> float:
    """The map at `score`: linear between breakpoints, flat beyond the ends (0.5 with no breakpoints)."""
    if not xs:
        return 0.5
    if score <= xs[0]:
        return ys[0]
    if score >= xs[-1]:
        return ys[-1]
    for k in range(1, len(xs)):
        if score <= xs[k]:
            span = xs[k] - xs[k - 1]
            return ys[k] if span == 0 else ys[k - 1] + (ys[k] - ys[k - 1]) * (score - xs[k - 1]) / span
    return ys[-1]


def reliability(probs: list[float], outcomes: list[float], bins: int = 10) -> list[dict]:
    """Per equal-width bin of predicted probability: {"lo", "hi", "n", "predicted", "observed"} (empty bins left out)."""
    out = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [(p, o) for p, o in zip(probs, outcomes) if lo <= p < hi or (b == bins - 1 and p == 1.0)]
        if inside:
            out.append({"lo": lo, "hi": hi, "n": len(inside), "predicted": sum(p for p, _ in inside) / len(inside),
                        "observed": sum(o for _, o in inside) / len(inside)})
    return out


def expected_calibration_error(probs: list[float], outcomes: list[float], bins: int = 10) -> float:
    """Sum over bins of (share of items) x |mean predicted - observed frequency|."""
    n = len(probs)
    return sum(b["n"] / n * abs(b["predicted"] - b["observed"]) for b in reliability(probs, outcomes, bins)) if n \
        else float("nan")


@dataclass
class Calibration:
    """What `pipelines.judge calibrate` learned about one judge in one mode on a set of people's labels."""

    judge: dict  # identity: model, endpoint, mode, orderings, prompts digest
    xs: list[float]
    ys: list[float]
    measured: dict  # agreement (raw, calibrated, with CIs), ECE, coverage, position bias, pairs, seconds, cost
    labels: dict  # source, pairs, digest
    version: int = 1
    notes: list[str] = field(default_factory=list)

    def probability(self, score: float) -> float:
        """P(a person prefers answer A) for the judge's raw score of A over B."""
        return apply(self.xs, self.ys, score)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1, ensure_ascii=False))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, judge: dict | None = None) -> "Calibration":
        """The calibration in `path`; with `judge`, refused unless it was made for that judge identity."""
        try:
            data = json.loads(Path(path).read_text())
            found = cls(**data)
        except (OSError, ValueError, TypeError) as error:
            raise ConfigError(f"calibration {path}: not a calibration file ({str(error)[:200]})") from None
        if judge is not None and found.judge != judge:
            differ = sorted(k for k in set(judge) | set(found.judge) if judge.get(k) != found.judge.get(k))
            raise ConfigError(f"calibration {path} was made for another judge (differs in {', '.join(differ)}: "
                              f"{ {k: found.judge.get(k) for k in differ} } there, { {k: judge.get(k) for k in differ} } "
                              "here); run python -m pipelines.judge calibrate for this judge")
        return found
