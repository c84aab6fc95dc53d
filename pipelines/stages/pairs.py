"""Preference pairs, shared by every recipe that makes them: prompts in, rated completions binarized out.

ToPrompts: id, messages or text  -> id, messages (the prompt turns), prompt (the last user turn), prompt_id
Binarize:  messages, completions  -> the preference schema (chosen, rejected, scores, ...)

`COMPLETIONS` is the column both sides share: UltraFeedback's completions (`stages/ultrafeedback.py`) rated by the
judge (`stages/judge.py`), or verified_if's checked samples.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

import polars as pl
import pyarrow as pa

from pipelines.core.calibration import Calibration
from pipelines.core.errors import ConfigError
from pipelines.core.stage import DROP, MESSAGES, Context, MapStage, with_drops
from schemas import PREFERENCE, check_preference, conversation_id, preference_id, prompt_id

COMPLETIONS = pl.List(pl.Struct({
    "model": pl.String, "principle": pl.String, "content": pl.String,
    "ratings": pl.List(pl.Struct({"aspect": pl.String, "rating": pl.Float64, "rationale": pl.String})),
    "overall": pl.Float64,
}))
RULES = ("best_vs_random", "best_vs_worst", "all_pairs")
SCORES = ("overall", "mean_aspects")
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


def judges_agree(row: dict, c: int, r: int) -> bool | None | str:
    """Whether a second judge (`second_scores`) also prefers completion c to r: True, False (it orders them the other
    way), None (it ties them or rated one not at all); "absent" when the row has no second judge."""
    second = row.get("second_scores")
    if second is None:
        return "absent"
    if second[c] is None or second[r] is None or second[c] == second[r]:
        return None
    return second[c] > second[r]


@dataclass
class Binarize(MapStage):
    """Rated completions -> chosen/rejected pairs (the preference schema), by one of RULES:
    - `best_vs_random` (as HuggingFaceH4/ultrafeedback_binarized): chosen = the highest score, rejected = a random
      one of the others (seeded by prompt_id);
    - `best_vs_worst`: rejected = the lowest score;
    - `all_pairs`: every pair with a higher and a lower score (several rows per prompt).
    A pair of identical texts, a tie or a margin below `min_margin` is dropped with that reason; under `all_pairs` a
    prompt is dropped only when none of its pairs is left.
    With a `calibration` (`python -m pipelines.judge calibrate`), a pair is ordered by the calibrated P(a person
    prefers it), which swaps a pair the map says people would order the other way, and a pair whose calibrated
    probability is below `min_confidence` is dropped as `judge: unsure (p=...)`; `p_person` in `meta`. With a second
    judge's `second_scores`, `judges_agree` in `meta`: whether it orders the pair the same way (null: it tied them)."""

    rule: str = "best_vs_random"
    min_margin: float = 0.0
    score: str = "overall"
    seed: int = 0
    calibration: str = ""  # a calibration file of this judge and mode
    min_confidence: float = 0.0
    name = "binarize"
    requires = ("messages", "prompt", "prompt_id", "completions")
    provides = tuple(PREFERENCE.names)
    batch_size = 256

    def __post_init__(self):
        if self.rule not in RULES:
            raise ConfigError(f"binarize rule {self.rule!r}: expected one of {', '.join(RULES)}")
        if self.score not in SCORES:
            raise ConfigError(f"binarize score {self.score!r}: expected one of {', '.join(SCORES)}")

    def identity(self, ctx: Context) -> dict:
        out = super().identity(ctx)
        if self.calibration:  # a new calibration file reruns binarize and what follows, nothing before
            out["calibration"] = hashlib.sha256(Path(self.calibration).read_bytes()).hexdigest()
        return out

    def summary(self, counters: dict) -> dict:
        out = {}
        seconded = {k: counters[f"judges_{k}"] for k in ("agree", "disagree", "undecided")
                    if counters.get(f"judges_{k}")}
        if seconded:
            out["second_opinion"] = seconded
        if not self.calibration:
            return out
        return {**out, "calibration": {"file": self.calibration, "swapped": counters.get("calibration_swapped", 0),
                                "unsure": counters.get("calibration_unsure", 0), "min_confidence": self.min_confidence}}

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        calibration = Calibration.load(Path(self.calibration)) if self.calibration else None
        out = []
        for row in batch.to_dicts():
            completions = row["completions"]
            scores = [score(c, self.score) for c in completions]
            kept, problems = [], []
            for c, r in candidate_pairs(scores, self.rule, seeded(self.seed, row["prompt_id"])):
                problem = pair_problem(completions[c], completions[r], (scores[c], scores[r]), self.min_margin)
                p_person = None
                if calibration is not None and problem is None:
                    p_person = calibration.probability(scores[c] - scores[r])
                    if p_person < 0.5:  # people would order this pair the other way
                        c, r, p_person = r, c, 1 - p_person
                        ctx.count("calibration_swapped")
                    if p_person < self.min_confidence:
                        problem = f"judge: unsure (p={p_person:.2f})"
                        ctx.count("calibration_unsure")
                if problem:
                    problems.append(problem)
                else:
                    notes = {} if p_person is None else {"p_person": round(p_person, 4)}
                    if (agree := judges_agree(row, c, r)) != "absent":
                        notes["judges_agree"] = agree
                        ctx.count({True: "judges_agree", False: "judges_disagree", None: "judges_undecided"}[agree])
                    kept.append(self._pair(row, completions, c, r, scores, notes))
            if self.rule == "all_pairs" and kept:
                ctx.count("pairs_not_formed", len(problems))
            elif problems:
                kept = []
            out += kept or [self._dropped(row, problems[0] if problems else "no_pairs: fewer than two scores")]
        return pl.from_arrow(pa.Table.from_pylist(out, schema=PAIRS))

    def _pair(self, row: dict, completions: list[dict], c: int, r: int, scores: list[float], notes: dict) -> dict:
        """The pair of completions c (chosen) and r; `notes` join its `meta` (p_person, judges_agree)."""
        chosen = row["messages"] + [{"role": "assistant", "content": completions[c]["content"]}]
        rejected = row["messages"] + [{"role": "assistant", "content": completions[r]["content"]}]
        pair = {
            "id": preference_id(chosen, rejected), "prompt_id": row["prompt_id"], "prompt": row["prompt"],
            "chosen": chosen, "rejected": rejected, "messages": chosen,
            "score_chosen": scores[c], "score_rejected": scores[r],
            "chosen_model": completions[c]["model"], "rejected_model": completions[r]["model"],
            "completions": completions, "source": row.get("source") or "ultrafeedback",
            "meta": json.dumps({"rule": self.rule, "score": self.score, "chosen_index": c, "rejected_index": r,
                                **notes}),
            "ordering_agreement": row.get("ordering_agreement"),
        }
        pair[DROP] = check_preference(pair)
        return pair

    def _dropped(self, row: dict, reason: str) -> dict:
        keep = {k: row.get(k) for k in ("prompt_id", "prompt", "completions", "source", "ordering_agreement")}
        return {**keep, "meta": "{}", DROP: reason}

