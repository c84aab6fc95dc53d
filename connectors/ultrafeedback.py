"""UltraFeedback raw (openbmb/UltraFeedback): `{"source", "instruction", "models", "completions": [{"model",
"principle", "response", "annotations": {aspect: {"Rating", "Rationale"}}, "fine-grained_score", "overall_score",
"critique"}]}`.

All completions are kept with their per-aspect ratings. The pair is binarized as `ultrafeedback_binarized` does:
chosen = the highest score (the mean of the aspect ratings, `fine-grained_score`), rejected = a random one of the
completions scored lower (random by a hash of the instruction, so reruns agree).
"""

from __future__ import annotations

import hashlib
import random

from connectors.base import RecordError, completion, extras, pair, text_field

NAME = "ultrafeedback"
KINDS = ("preference",)


def matches(record: dict) -> bool:
    return "instruction" in record and isinstance(record.get("completions"), list)


def number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None  # "N/A" and friends


def read_completion(raw: dict) -> dict:
    ratings = []
    for aspect, note in (raw.get("annotations") or {}).items():
        if isinstance(note, list):  # some dumps wrap each annotation in a list
            note = note[0] if note else {}
        note = note if isinstance(note, dict) else {}
        ratings.append({"aspect": aspect, "rating": number(note.get("Rating")),
                        "rationale": note.get("Rationale")})
    scored = [r["rating"] for r in ratings if r["rating"] is not None]
    fine = number(raw.get("fine-grained_score"))
    overall = fine if fine is not None else (sum(scored) / len(scored) if scored else number(raw.get("overall_score")))
    return completion(text_field(raw, "response"), raw.get("model"), raw.get("principle"), ratings, overall)


def convert(record: dict) -> list[dict]:
    instruction = text_field(record, "instruction")
    done = [read_completion(c) for c in record["completions"] if isinstance(c, dict)]
    scored = [c for c in done if c["overall"] is not None and c["content"].strip()]
    if len(scored) < 2:
        raise RecordError(f"too_few: {len(scored)} rated completions, a pair needs 2")
    best = max(scored, key=lambda c: c["overall"])
    lower = [c for c in scored if c["overall"] < best["overall"]]
    if not lower:
        raise RecordError("tie: every rated completion has the same score")
    rng = random.Random(hashlib.sha256(instruction.encode()).hexdigest())
    worse = rng.choice(lower)
    return [pair([{"role": "user", "content": instruction}], best["content"], worse["content"],
                 extras(record, ("instruction", "completions")), score_chosen=best["overall"],
                 score_rejected=worse["overall"], chosen_model=best["model"], rejected_model=worse["model"],
                 completions=done)]
