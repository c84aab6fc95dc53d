"""The judge: a teacher that rates each prompt's completions, in one of three modes (`MODES`).

Judge: prompt, completions -> completions rated (ratings per aspect, overall), ordering_agreement
SecondJudge: prompt, completions -> second_scores (a second judge's `overall` of each completion, for review)

- `listwise` (UltraFeedback): the judge sees every completion of a prompt at once and rates one aspect per request,
  under `orderings` orders of the completions (as given, reversed, then rotations); a completion's rating is the
  mean over the orders that answered, and `ordering_agreement` is the share of completion pairs that the orders rank
  the same way (ties agree with ties), averaged over aspects.
- `pointwise`: each completion alone, `overall` on 1-9; with logprobs the rating is the expected digit (G-Eval), the
  sampled digit kept beside as aspect `overall_sampled`.
- `pairwise`: every pair in both orders ("which is better, 1 or 2?"); with logprobs a pair's preference is the mean
  over both orders of P(that answer), else a verdict the two orders disagree on is a tie. `overall` is the expected
  number of wins (a Borda count: a rank score, 0..n-1), `wins` the sampled wins (ties count a half), and
  `ordering_agreement` the share of pairs whose two orders agree.

Pointwise and pairwise rate `overall` only (binarize with score=overall). A judge answer that is neither valid JSON
nor the `Rating: X` text format is asked again (`teacher.reasks`), then counted as a parse failure; a completion
missing a rating is left out, and a prompt left with fewer than two rated completions is dropped with the judge's
error (`judge_failed`): no pair ever carries a null rating. The requests are built in
`pipelines/prompts/ultrafeedback.py`.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

import polars as pl

from pipelines.core.errors import ConfigError
from pipelines.prompts import ultrafeedback as F
from pipelines.teacher.wire import Request, Result
from pipelines.teacher.stage import TeacherStage, Verdict
from pipelines.stages.pairs import COMPLETIONS

MODES = ("listwise", "pointwise", "pairwise")
JUDGED = (*F.ASPECTS, F.OVERALL)


def judge_identity(config, mode: str, orderings: int) -> dict:
    """What a judge's calibration is valid for (`pipelines.core.calibration`): its model and endpoint, the mode, the
    orders and a digest of its prompts."""
    prompts = Path(F.__file__).with_name("ultrafeedback.yaml")
    return {"model": config.model if config.base_url else f"embedded:{config.embedded.model}",
            "endpoint": config.base_url or "embedded", "mode": mode, "orderings": orderings,
            "prompts": hashlib.sha256(prompts.read_bytes()).hexdigest()[:16]}


def orders(n: int, orderings: int) -> list[list[int]]:
    """Positions of the completions under each ordering: as given, reversed, then rotations."""
    found = [list(range(n)), list(range(n))[::-1]]
    found += [list(range(r, n)) + list(range(r)) for r in range(1, n)]
    unique = list(dict.fromkeys(tuple(o) for o in found))
    return [list(o) for o in unique[:orderings]]


def ordered_pairs(n: int) -> list[tuple[int, int]]:
    """Every pair of n completions in both orders: (i, j) shows i first."""
    return [(i, j) for i in range(n) for j in range(n) if i != j]


def _sign(d: float) -> int:
    return (d > 0) - (d < 0)


def agreement(first: list[float | None], other: list[float | None]) -> tuple[int, int]:
    """(pairs ranked the same way, pairs comparable) between two orderings' ratings of the same completions."""
    same = total = 0
    for i in range(len(first)):
        for j in range(i + 1, len(first)):
            if None in (first[i], first[j], other[i], other[j]):
                continue
            total += 1
            same += _sign(first[i] - first[j]) == _sign(other[i] - other[j])
    return same, total


@dataclass
class Judge(TeacherStage):
    """Rates each prompt's completions in one of MODES (module docstring)."""

    orderings: int = 2
    max_tokens: int = 320
    mode: str = "listwise"
    name = "judge"
    requires = ("prompt", "completions")
    provides = ("completions", "ordering_agreement")
    dtypes = {"completions": COMPLETIONS, "ordering_agreement": pl.Float64}
    batch_size = 16
    retries = 0
    sees_failures = True
    prompt_files = (F.PROMPT_FILE,)
    teacher_role = "judge"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"judge mode {self.mode!r}: expected one of {', '.join(MODES)}")

    def summary(self, counters: dict) -> dict:
        """The judge's reliability: answers asked for, unreadable after re-asks, expected ratings (logprobs), and
        how often two orderings of the same completions ranked a pair alike."""
        keys = {"requests": "judge_requests", "parse_failures": "judge_parse_failures",
                "expected_ratings": "judge_expected_ratings", "pairs_agreeing": "ordering_pairs_agreeing",
                "pairs_compared": "ordering_pairs_compared"}
        return {"judge": {name: counters.get(key, 0) for name, key in keys.items()}}

    def requests(self, row: dict, attempt: int) -> list[Request]:
        texts = [c["content"] for c in row["completions"]]
        if self.mode == "pointwise":
            return [F.point_request(row["prompt"], t, self.max_tokens) for t in texts]
        if self.mode == "pairwise":
            return [F.pair_request(row["prompt"], texts[i], texts[j], self.max_tokens)
                    for i, j in ordered_pairs(len(texts))]
        return [F.rating_request(aspect, row["prompt"], [texts[i] for i in order], self.max_tokens)
                for order in orders(len(texts), self.orderings) for aspect in JUDGED]

    def accept(self, row: dict, results: list[Result]) -> Verdict:
        counts: Counter = Counter()
        errors = []
        for result in results:
            counts["judge_requests"] += 1
            if result.error:
                counts["judge_parse_failures" if result.error.startswith("invalid_json") else "judge_failed"] += 1
                errors.append(result.error)
        rated, agreeing = getattr(self, f"_{self.mode}")(row["completions"], results, counts)
        reason = None if len(rated) >= 2 else (f"judge_failed: {len(rated)} of {len(row['completions'])} "
                                               "completions rated" + (f" ({errors[0]})" if errors else ""))
        return Verdict({"completions": rated, "ordering_agreement": agreeing}, reason, counts=dict(counts))

    def _listwise(self, completions: list[dict], results: list[Result], counts: Counter):
        # by_aspect[aspect][o] = ratings in completion order (None where a completion has no rating)
        by_aspect: dict = {a: {} for a in JUDGED}
        jobs = [(o, order, aspect) for o, order in enumerate(orders(len(completions), self.orderings))
                for aspect in JUDGED]
        for (o, order, aspect), result in zip(jobs, results):
            if result.error:
                continue
            ratings = [None] * len(order)
            for shown, parsed in zip(order, result.data):
                ratings[shown] = parsed
            by_aspect[aspect][o] = ratings
        rated = combine(completions, by_aspect)
        same, compared = listwise_agreement(by_aspect)
        counts["ordering_pairs_agreeing"] += same
        counts["ordering_pairs_compared"] += compared
        if len(completions) > len(rated):
            counts["completions_unrated"] += len(completions) - len(rated)
        return rated, same / compared if compared else None

    def _pointwise(self, completions: list[dict], results: list[Result], counts: Counter):
        rated = []
        for completion, result in zip(completions, results):
            if result.error:
                continue
            overall, weighted = F.point_score(result)
            counts["judge_expected_ratings" if weighted else "judge_sampled_ratings"] += 1
            rated.append({**completion, "overall": round(overall, 4), "ratings": [
                {"aspect": "overall_sampled", "rating": float(result.data), "rationale": ""}]})
        return rated, None

    def _pairwise(self, completions: list[dict], results: list[Result], counts: Counter):
        first = {}  # (i, j) -> (P(the answer shown first is better), sampled verdict: 1 or 2)
        for (i, j), result in zip(ordered_pairs(len(completions)), results):
            if result.error:
                continue
            p_first, expected = F.pair_first(result)
            counts["judge_expected_ratings" if expected else "judge_sampled_ratings"] += 1
            counts["judge_verdicts"] += 1
            counts["judge_first_wins"] += int(result.data == 1)
            first[(i, j)] = (p_first, result.data)
        scores, wins, same, compared = pair_scores(len(completions), first)
        counts["ordering_pairs_agreeing"] += same
        counts["ordering_pairs_compared"] += compared
        rated = [{**c, "overall": round(scores[k], 4), "ratings": [{"aspect": "wins", "rating": wins[k],
                                                                     "rationale": ""}]}
                 for k, c in enumerate(completions) if scores[k] is not None]
        return rated, same / compared if compared else None


@dataclass
class SecondJudge(Judge):
    """A second opinion on the same completions: another judge (the `second_judge` role) or the same one in another
    mode. Its `overall` of each completion goes in `second_scores` (None where it gave none); it never drops a row
    and never changes the judge's ratings: binarize notes whether it orders each pair the same way, and the review
    app asks people first about the pairs the two judges order differently."""

    name = "second_judge"
    provides = ("second_scores",)
    dtypes = {"second_scores": pl.List(pl.Float64)}
    teacher_role = "second_judge"

    def summary(self, counters: dict) -> dict:
        return {"second_judge": {"mode": self.mode, **super().summary(counters)["judge"]}}

    def accept(self, row: dict, results: list[Result]) -> Verdict:
        rated = super().accept(row, results)
        overall = {c["content"]: c["overall"] for c in rated.values["completions"]}
        return Verdict({"second_scores": [overall.get(c["content"]) for c in row["completions"]]}, None,
                       counts=rated.counts)


def combine(completions: list[dict], by_aspect: dict) -> list[dict]:
    """The completions rated under every aspect, each rating the mean over the orderings that answered."""
    rated = []
    for i, completion in enumerate(completions):
        ratings, overall = [], None
        for aspect in JUDGED:
            answers = [o[i] for o in by_aspect[aspect].values() if o[i] is not None]
            if not answers:
                break
            numbers = [a["rating"] for a in answers if a["rating"] is not None]
            if aspect == F.OVERALL:
                overall = mean(numbers) if numbers else None
            else:
                ratings.append({"aspect": aspect, "rating": mean(numbers) if numbers else None,
                                "rationale": answers[0]["rationale"]})
        if overall is not None and len(ratings) == len(F.ASPECTS):
            rated.append({**completion, "ratings": ratings, "overall": overall})
    return rated


def listwise_agreement(by_aspect: dict) -> tuple[int, int]:
    """(pairs ranked alike, pairs compared) between the first ordering and each other one, over aspects."""
    same = total = 0
    for aspect in JUDGED:
        runs = by_aspect[aspect]
        if 0 in runs:
            for o, other in runs.items():
                if o:
                    s, t = agreement([x and x["rating"] for x in runs[0]], [x and x["rating"] for x in other])
                    same, total = same + s, total + t
    return same, total


def pair_scores(n: int, first: dict) -> tuple[list[float | None], list[float], int, int]:
    """From {(i, j): (P(i, shown first, is better), sampled verdict)}: each completion's expected wins over the
    pairs judged in both orders (None for a completion in no such pair), its sampled wins (a disagreement between
    the orders is a tie, half a win each), and (pairs whose orders agree, pairs judged in both orders)."""
    expected_wins: list[float | None] = [None] * n
    wins = [0.0] * n
    same = compared = 0
    for i in range(n):
        for j in range(i + 1, n):
            if (i, j) not in first or (j, i) not in first:
                continue
            (p_ij, verdict_ij), (p_ji, verdict_ji) = first[(i, j)], first[(j, i)]
            p_i = (p_ij + 1 - p_ji) / 2  # i better: shown first and chosen, or shown second and chosen
            for k, p in ((i, p_i), (j, 1 - p_i)):
                expected_wins[k] = (expected_wins[k] or 0.0) + p
            compared += 1
            i_won = (verdict_ij == 1, verdict_ji == 2)
            if i_won[0] == i_won[1]:
                same += 1
                wins[i if i_won[0] else j] += 1
            else:
                wins[i] += 0.5
                wins[j] += 0.5
    return expected_wins, wins, same, compared
