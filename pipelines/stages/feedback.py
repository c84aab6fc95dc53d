"""AI feedback as in UltraFeedback: prompts -> several completions -> judge ratings -> chosen/rejected pairs.

ToPrompts: id, messages or text  -> id, messages (the prompt turns), prompt (the last user turn), prompt_id
Complete:  messages, prompt_id    -> completions (model, principle, content)
Judge:     prompt, completions    -> completions rated (ratings per aspect, overall), ordering_agreement
Binarize:  messages, completions  -> the preference schema (chosen, rejected, scores, ...)

The judge sees every completion of a prompt at once and rates one aspect per request, under `orderings` orders of
the completions (as given, reversed, then rotations); a completion's rating is the mean over the orders that
answered, and `ordering_agreement` is the share of completion pairs that the orders rank the same way (ties agree
with ties), averaged over aspects. A judge answer that is neither valid JSON nor the `Rating: X` text format is asked
again (`teacher.reasks`), then counted as a parse failure; a completion missing an aspect under every order is left
out, and a prompt left with fewer than two rated completions is dropped with the judge's error: no pair ever
carries a null rating.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import partial
from statistics import mean

import polars as pl
import pyarrow as pa

from pipelines.core.errors import ConfigError
from pipelines.core.stage import DROP, MESSAGES, Context, MapStage, with_drops
from pipelines.prompts import feedback as F
from pipelines.teacher.client import Request
from pipelines.teacher.stage import Asks
from schemas import PREFERENCE, check_preference, conversation_id, preference_id, prompt_id

COMPLETIONS = pl.List(pl.Struct({
    "model": pl.String, "principle": pl.String, "content": pl.String,
    "ratings": pl.List(pl.Struct({"aspect": pl.String, "rating": pl.Float64, "rationale": pl.String})),
    "overall": pl.Float64,
}))
RULES = ("best_vs_random", "best_vs_worst", "all_pairs")
SCORES = ("overall", "mean_aspects")
JUDGED = (*F.ASPECTS, F.OVERALL)
PAIRS = pa.schema([*PREFERENCE, pa.field("ordering_agreement", pa.float64()), pa.field(DROP, pa.string())])


def seeded(*parts) -> random.Random:
    return random.Random(":".join(map(str, parts)))


@dataclass
class ToPrompts(MapStage):
    """A conversation's turns up to its last user turn (a trailing answer is left out), or a text as one user turn,
    become the prompt: `messages` ends with that user turn, `prompt` is its text, and `id` hashes the turns, so exact
    and near dedup work on prompts."""

    name = "prompts"
    requires = ("id",)
    provides = ("messages", "prompt", "prompt_id")
    batch_size = 1024

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        if "messages" in batch.columns:
            conversations = batch["messages"].to_list()
        else:
            conversations = [[{"role": "user", "content": text or ""}] for text in batch["text"].to_list()]
        turns, prompts, reasons = [], [], []
        for messages in conversations:
            last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
            turns.append(messages[: last + 1] if last is not None else [])
            prompts.append(messages[last]["content"] if last is not None else "")
            reasons.append(None if prompts[-1].strip() else "no_prompt: no user turn with text")
        out = batch.select(*[c for c in ("source", "meta") if c in batch.columns]).with_columns(
            pl.Series("id", [conversation_id(t) for t in turns], dtype=pl.String),
            pl.Series("messages", turns, dtype=MESSAGES),
            pl.Series("prompt", prompts, dtype=pl.String),
            pl.Series("prompt_id", [prompt_id(p) for p in prompts], dtype=pl.String))
        return with_drops(out, reasons)


@dataclass
class Complete(Asks, MapStage):
    """`n_completions` answers per prompt: completion k goes to model k of the pool (in turn) with a temperature
    from `temperatures` and a system prompt of a principle sampled per completion."""

    n_completions: int = 4
    models: tuple[str, ...] = ()  # models of the teacher pool, asked in turn; empty = every model of the pool
    temperatures: tuple[float, ...] = (0.7, 1.0)
    top_p: float = 0.95
    max_tokens: int = 160
    seed: int = 0
    name = "complete"
    requires = ("messages", "prompt_id")
    provides = ("completions",)
    batch_size = 32
    prompt_files = (F.PROMPT_FILE,)

    def plan(self, pid: str, models: list[str]) -> list[dict]:
        """Model, principle, system prompt and sampling of each completion of prompt `pid` (deterministic)."""
        rng = seeded(self.seed, pid)
        out = []
        for k in range(self.n_completions):
            principle = rng.choice(sorted(F.PRINCIPLES))
            temperature = self.temperatures[(k // len(models)) % len(self.temperatures)]
            out.append({"model": models[k % len(models)], "principle": principle,
                        "system": F.system_prompt(principle, rng.randrange(1000)),
                        "params": {"max_tokens": self.max_tokens, "temperature": temperature, "top_p": self.top_p,
                                   "seed": rng.randrange(2**31)}})
        return out

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        models = list(self.models) or self.client(ctx).models()
        rows = batch.select("messages", "prompt_id").to_dicts()
        plans = [self.plan(r["prompt_id"], models) for r in rows]
        requests = [Request([{"role": "system", "content": p["system"]}, *r["messages"]], p["params"],
                            model=p["model"]) for r, plan in zip(rows, plans) for p in plan]
        results = iter(self.ask(ctx, requests))
        completions, reasons = [], []
        for plan in plans:
            done, errors = [], []
            for p in plan:
                result = next(results)
                text = (result.text or "").strip()
                if result.error or not text:
                    errors.append(result.error or "empty answer")
                    ctx.count("completion_failed")
                    continue
                done.append({"model": p["model"], "principle": p["principle"], "content": text, "ratings": [],
                             "overall": None})
            completions.append(done)
            reasons.append(None if len(done) >= 2 else
                           f"too_few_completions: {len(done)} of {len(plan)} answered ({errors[0]})")
        out = batch.with_columns(pl.Series("completions", completions, dtype=COMPLETIONS))
        return with_drops(out, reasons)


def orders(n: int, orderings: int) -> list[list[int]]:
    """Positions of the completions under each ordering: as given, reversed, then rotations."""
    found = [list(range(n)), list(range(n))[::-1]]
    found += [list(range(r, n)) + list(range(r)) for r in range(1, n)]
    unique = list(dict.fromkeys(tuple(o) for o in found))
    return [list(o) for o in unique[:orderings]]


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


MODES = ("listwise", "pointwise", "pairwise")
TOP_LOGPROBS = 10


@dataclass
class Judge(Asks, MapStage):
    """Rates each prompt's completions in one of MODES:
    - `listwise` (UltraFeedback): every completion at once, one request per aspect and ordering (module docstring);
    - `pointwise`: each completion alone, `overall` on 1-9; with logprobs the rating is the expected digit
      (G-Eval), the sampled digit kept beside as aspect `overall_sampled`;
    - `pairwise`: every pair in both orders ("which is better, 1 or 2?"); with logprobs a pair's preference is the
      mean over both orders of P(that answer), else a verdict the two orders disagree on is a tie. `overall` is the
      expected number of wins (a Borda count: a rank score, 0..n-1), `wins` the sampled wins (ties count a half), and
      `ordering_agreement` the share of pairs whose two orders agree.
    Pointwise and pairwise rate `overall` only (binarize with score=overall)."""

    orderings: int = 2
    max_tokens: int = 320
    mode: str = "listwise"
    name = "judge"
    requires = ("prompt", "completions")
    provides = ("completions", "ordering_agreement")
    batch_size = 16
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

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        if self.mode == "pointwise":
            return self._pointwise(batch, ctx)
        if self.mode == "pairwise":
            return self._pairwise(batch, ctx)
        rows = batch.select("prompt", "completions").to_dicts()
        jobs, requests = [], []
        for r, row in enumerate(rows):
            texts = [c["content"] for c in row["completions"]]
            for o, order in enumerate(orders(len(texts), self.orderings)):
                for aspect in JUDGED:
                    jobs.append((r, o, order, aspect))
                    requests.append(Request(
                        F.rating_messages(aspect, row["prompt"], [texts[i] for i in order]),
                        {"max_tokens": self.max_tokens, "temperature": 0.0},
                        schema=F.ratings_schema(len(texts), aspect),
                        parse=partial(F.parse_ratings, n=len(texts), aspect=aspect)))
        results = self.ask(ctx, requests)
        # got[r][aspect][o] = ratings in completion order (None where a completion has no rating yet)
        got = [{a: {} for a in JUDGED} for _ in rows]
        errors: list[list[str]] = [[] for _ in rows]
        for (r, o, order, aspect), result in zip(jobs, results):
            if _failed(result, ctx, errors[r]):
                continue
            ratings = [None] * len(order)
            for shown, parsed in zip(order, result.data):
                ratings[shown] = parsed
            got[r][aspect][o] = ratings
        completions, agreements, reasons = [], [], []
        for r, row in enumerate(rows):
            rated, (same, compared) = self._combine(row["completions"], got[r])
            completions.append(rated)
            agreements.append(same / compared if compared else None)
            ctx.count("ordering_pairs_agreeing", same)
            ctx.count("ordering_pairs_compared", compared)
            left_out = len(row["completions"]) - len(rated)
            if left_out:
                ctx.count("completions_unrated", left_out)
            reasons.append(None if len(rated) >= 2 else
                           f"judge_failed: {len(rated)} of {len(row['completions'])} completions rated"
                           + (f" ({errors[r][0]})" if errors[r] else ""))
        out = batch.with_columns(pl.Series("completions", completions, dtype=COMPLETIONS),
                                 pl.Series("ordering_agreement", agreements, dtype=pl.Float64))
        return with_drops(out, reasons)

    def _pointwise(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        rows = batch.select("prompt", "completions").to_dicts()
        requests = [point_request(row["prompt"], c["content"], self.max_tokens)
                    for row in rows for c in row["completions"]]
        results = iter(self.ask(ctx, requests))
        completions, reasons = [], []
        for row in rows:
            rated, errors = [], []
            for completion in row["completions"]:
                result = next(results)
                if _failed(result, ctx, errors):
                    continue
                overall, weighted = point_score(result)
                ctx.count("judge_expected_ratings" if weighted else "judge_sampled_ratings")
                rated.append({**completion, "overall": round(overall, 4), "ratings": [
                    {"aspect": "overall_sampled", "rating": float(result.data), "rationale": ""}]})
            completions.append(rated)
            reasons.append(self._too_few(rated, row, errors))
        return with_drops(batch.with_columns(pl.Series("completions", completions, dtype=COMPLETIONS),
                                             pl.Series("ordering_agreement", [None] * len(rows), dtype=pl.Float64)),
                          reasons)

    def _pairwise(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        rows = batch.select("prompt", "completions").to_dicts()
        jobs, requests = [], []
        for r, row in enumerate(rows):
            texts = [c["content"] for c in row["completions"]]
            for i in range(len(texts)):
                for j in range(len(texts)):
                    if i != j:  # (i, j) shows i first; (j, i) is the same pair in the other order
                        jobs.append((r, i, j))
                        requests.append(pair_request(row["prompt"], texts[i], texts[j], self.max_tokens))
        results = self.ask(ctx, requests)
        # first[r][(i, j)] = (P(the answer shown first is better), sampled verdict: 1 or 2)
        first: list[dict] = [{} for _ in rows]
        errors: list[list[str]] = [[] for _ in rows]
        for (r, i, j), result in zip(jobs, results):
            if _failed(result, ctx, errors[r]):
                continue
            p_first, expected = pair_first(result)
            ctx.count("judge_expected_ratings" if expected else "judge_sampled_ratings")
            ctx.count("judge_verdicts")
            ctx.count("judge_first_wins", int(result.data == 1))
            first[r][(i, j)] = (p_first, result.data)
        completions, agreements, reasons = [], [], []
        for r, row in enumerate(rows):
            scores, wins, same, compared = pair_scores(len(row["completions"]), first[r])
            ctx.count("ordering_pairs_agreeing", same)
            ctx.count("ordering_pairs_compared", compared)
            rated = [{**c, "overall": round(scores[k], 4),
                      "ratings": [{"aspect": "wins", "rating": wins[k], "rationale": ""}]}
                     for k, c in enumerate(row["completions"]) if scores[k] is not None]
            completions.append(rated)
            agreements.append(same / compared if compared else None)
            reasons.append(self._too_few(rated, row, errors[r]))
        return with_drops(batch.with_columns(pl.Series("completions", completions, dtype=COMPLETIONS),
                                             pl.Series("ordering_agreement", agreements, dtype=pl.Float64)), reasons)

    @staticmethod
    def _too_few(rated: list, row: dict, errors: list[str]) -> str | None:
        if len(rated) >= 2:
            return None
        return (f"judge_failed: {len(rated)} of {len(row['completions'])} completions rated"
                + (f" ({errors[0]})" if errors else ""))

    @staticmethod
    def _combine(completions: list[dict], by_aspect: dict) -> tuple[list[dict], tuple[int, int]]:
        """The completions rated under every aspect (means over orderings), and (pairs ranked alike, compared)."""
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
        same = total = 0
        for aspect in JUDGED:
            runs = by_aspect[aspect]
            if 0 in runs:
                for o, other in runs.items():
                    if o:
                        s, t = agreement([x and x["rating"] for x in runs[0]], [x and x["rating"] for x in other])
                        same, total = same + s, total + t
        return rated, (same, total)


def judge_params(max_tokens: int) -> dict:
    """Sampling of a pointwise or pairwise judge request: greedy, with the top logprobs of every token. 48 tokens:
    the answer is a few tokens, but a small model pads grammar-enforced JSON with whitespace."""
    return {"max_tokens": min(max_tokens, 48), "temperature": 0.0, "logprobs": True, "top_logprobs": TOP_LOGPROBS}


POINT_DIGITS = range(F.POINT_SCALE[0], F.POINT_SCALE[1] + 1)


def point_request(instruction: str, answer: str, max_tokens: int = 48) -> Request:
    """One pointwise judge request: `answer` rated 1-9 as a reply to `instruction`."""
    return Request(F.point_messages(instruction, answer), judge_params(max_tokens), schema=F.point_schema(),
                   parse=partial(F.parse_choice, key="rating", allowed=POINT_DIGITS))


def point_score(result) -> tuple[float, bool]:
    """A pointwise answer's score: the expected digit when the answer carries logprobs (True), else the sampled
    digit (False)."""
    distribution = F.digit_distribution(result.logprobs, POINT_DIGITS)
    return (F.expected(distribution), True) if distribution else (float(result.data), False)


PAIR_DIGITS = range(1, 3)


def pair_request(instruction: str, first: str, second: str, max_tokens: int = 48) -> Request:
    """One pairwise judge request: which of two answers to `instruction` is better (1 = the first shown)."""
    return Request(F.pair_messages(instruction, first, second), judge_params(max_tokens), schema=F.pair_schema(),
                   parse=partial(F.parse_choice, key="better", allowed=PAIR_DIGITS))


def pair_first(result) -> tuple[float, bool]:
    """P(the answer shown first is better): from the logprobs of "1"/"2" when the answer carries them (True), else
    the sampled verdict (False)."""
    distribution = F.digit_distribution(result.logprobs, PAIR_DIGITS)
    return (distribution.get(1, 0.0), True) if distribution else (float(result.data == 1), False)


def _failed(result, ctx: Context, errors: list[str]) -> bool:
    """Count a judge answer; a failed one also by kind, its error kept in `errors`."""
    ctx.count("judge_requests")
    if result.error:
        ctx.count("judge_parse_failures" if result.error.startswith("invalid_json") else "judge_failed")
        errors.append(result.error)
    return bool(result.error)


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


def score(completion: dict, how: str) -> float:
    """The number binarization ranks by: the judge's overall score (1-10), or the mean aspect rating (1-5)."""
    if how == "overall":
        return completion["overall"]
    numbers = [r["rating"] for r in completion["ratings"] if r["rating"] is not None]
    return mean(numbers)


def candidate_pairs(scores: list[float], rule: str, rng: random.Random) -> list[tuple[int, int]]:
    """(chosen, rejected) indices by `rule`; the best is the first of the highest scores."""
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    rest = [i for i in range(len(scores)) if i != best]
    if rule == "best_vs_random":
        return [(best, rng.choice(rest))]
    if rule == "best_vs_worst":
        return [(best, min(rest, key=lambda i: (scores[i], -i)))]
    return [(i, j) for i in range(len(scores)) for j in range(len(scores)) if scores[i] > scores[j]]


def pair_problem(chosen: dict, rejected: dict, scores: tuple[float, float], min_margin: float) -> str | None:
    """Why a (chosen, rejected) pair is not kept, or None."""
    if chosen["content"].strip() == rejected["content"].strip():
        return "identical_texts: chosen and rejected are the same text"
    margin = scores[0] - scores[1]
    if margin <= 0:
        return f"tie: both scored {scores[0]:g}"
    if margin < min_margin:
        return f"low_margin: {margin:g} < min_margin {min_margin:g}"
    return None


@dataclass
class Binarize(MapStage):
    """Rated completions -> chosen/rejected pairs (the preference schema), by one of RULES:
    - `best_vs_random` (as HuggingFaceH4/ultrafeedback_binarized): chosen = the highest score, rejected = a random
      one of the others (seeded by prompt_id);
    - `best_vs_worst`: rejected = the lowest score;
    - `all_pairs`: every pair with a higher and a lower score (several rows per prompt).
    A pair of identical texts, a tie or a margin below `min_margin` is dropped with that reason; under `all_pairs` a
    prompt is dropped only when none of its pairs is left."""

    rule: str = "best_vs_random"
    min_margin: float = 0.0
    score: str = "overall"
    seed: int = 0
    name = "binarize"
    requires = ("messages", "prompt", "prompt_id", "completions")
    provides = tuple(PREFERENCE.names)
    batch_size = 256

    def __post_init__(self):
        if self.rule not in RULES:
            raise ConfigError(f"binarize rule {self.rule!r}: expected one of {', '.join(RULES)}")
        if self.score not in SCORES:
            raise ConfigError(f"binarize score {self.score!r}: expected one of {', '.join(SCORES)}")

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        out = []
        for row in batch.to_dicts():
            completions = row["completions"]
            scores = [score(c, self.score) for c in completions]
            kept, problems = [], []
            for c, r in candidate_pairs(scores, self.rule, seeded(self.seed, row["prompt_id"])):
                problem = pair_problem(completions[c], completions[r], (scores[c], scores[r]), self.min_margin)
                if problem:
                    problems.append(problem)
                else:
                    kept.append(self._pair(row, completions, c, r, scores))
            if self.rule == "all_pairs" and kept:
                ctx.count("pairs_not_formed", len(problems))
            elif problems:
                kept = []
            out += kept or [self._dropped(row, problems[0] if problems else "no_pairs: fewer than two scores")]
        return pl.from_arrow(pa.Table.from_pylist(out, schema=PAIRS))

    def _pair(self, row: dict, completions: list[dict], c: int, r: int, scores: list[float]) -> dict:
        chosen = row["messages"] + [{"role": "assistant", "content": completions[c]["content"]}]
        rejected = row["messages"] + [{"role": "assistant", "content": completions[r]["content"]}]
        pair = {
            "id": preference_id(chosen, rejected), "prompt_id": row["prompt_id"], "prompt": row["prompt"],
            "chosen": chosen, "rejected": rejected, "messages": chosen,
            "score_chosen": scores[c], "score_rejected": scores[r],
            "chosen_model": completions[c]["model"], "rejected_model": completions[r]["model"],
            "completions": completions, "source": row.get("source") or "ultrafeedback",
            "meta": json.dumps({"rule": self.rule, "score": self.score, "chosen_index": c, "rejected_index": r}),
            "ordering_agreement": row.get("ordering_agreement"),
        }
        pair[DROP] = check_preference(pair)
        return pair

    def _dropped(self, row: dict, reason: str) -> dict:
        keep = {k: row.get(k) for k in ("prompt_id", "prompt", "completions", "source", "ordering_agreement")}
        return {**keep, "meta": "{}", DROP: reason}

