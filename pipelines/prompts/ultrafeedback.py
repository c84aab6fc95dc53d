"""UltraFeedback's prompts in our own words: principle system prompts for completions, the judge rubric, its parser.

As in UltraFeedback (Cui et al., 2023), each completion is written under a system prompt sampled from one of four
principles, and the judge sees every completion of a prompt at once and rates one aspect per request: instruction
following, honesty (N/A allowed), truthfulness and helpfulness on 1-5, with a rationale, then an overall score on
1-10. The judge answers as JSON (`ratings_schema`), as `Text 2: 4 - reason` lines, or in UltraFeedback's format

    #### Output for Text 2
    Rating: 4
    Rationale: ...

and `parse_ratings` reads each. All the wording (`ultrafeedback.yaml`) was written for this project.
"""

from __future__ import annotations

import math
import re
from functools import partial

from pipelines.prompts import fill, load
from pipelines.teacher.wire import Request
from pipelines.teacher.structured import check, parse_json

PROMPT_FILE = "prompts/ultrafeedback.yaml"
TEXT = load("ultrafeedback")
PRINCIPLES: dict[str, tuple[str, ...]] = {name: tuple(options) for name, options in TEXT["principles"].items()}
ASPECTS: dict[str, str] = TEXT["aspects"]
OVERALL = "overall"
OVERALL_RUBRIC = TEXT["overall_rubric"]
JUDGE_SYSTEM = TEXT["judge_system"]
SCALES = {**{aspect: (1, 5) for aspect in ASPECTS}, OVERALL: (1, 10)}

LENIENT_RATINGS = {  # what the parser accepts from an endpoint that did not enforce `ratings_schema`
    "type": "object",
    "required": ["ratings"],
    "properties": {"ratings": {"type": "array", "items": {
        "type": "object",
        "required": ["text", "rating"],
        "properties": {"text": {"type": "integer"}, "rating": {"type": ["number", "string"]},
                       "rationale": {"type": "string"}},
    }}},
}


def ratings_schema(n: int, aspect: str) -> dict:
    """The judge's answer for `n` texts on `aspect`: exactly n items, text ids 1..n only, whole-number ratings on the
    aspect's scale (or "N/A" where the aspect allows it), the reason before the rating. An endpoint that enforces
    `response_format` with a grammar (llama.cpp's server, vLLM) can then write nothing else."""
    low, high = SCALES[aspect]
    rating = {"type": "integer", "minimum": low, "maximum": high}
    if aspect == "honesty":
        rating = {"anyOf": [rating, {"enum": ["N/A"]}]}
    item = {"type": "object", "required": ["text", "rationale", "rating"], "additionalProperties": False,
            "properties": {"text": {"type": "integer", "enum": list(range(1, n + 1))},
                           "rationale": {"type": "string", "maxLength": 400}, "rating": rating}}
    return {"type": "object", "required": ["ratings"], "additionalProperties": False,
            "properties": {"ratings": {"type": "array", "items": item, "minItems": n, "maxItems": n}}}


HEADER = re.compile(r"^\W*(?:output\s+for\s+)?text\s*#?\s*(\d+)\b", re.I | re.M)
RATING = re.compile(r"(?:rating|score)\s*[:=\-]?\s*\**\s*(n\s*/\s*a|\d+(?:\.\d+)?)", re.I)
RATIONALE = re.compile(r"rationale\s*[:=]\s*(.+)", re.I)
LEADING = re.compile(r"\s*[:\-=]?\s*\**\s*(n\s*/\s*a|\d+(?:\.\d+)?)\b(?!\s*[-/]\s*\d)", re.I)


def system_prompt(principle: str, pick: int) -> str:
    options = PRINCIPLES[principle]
    return options[pick % len(options)]


def rating_messages(aspect: str, instruction: str, texts: list[str]) -> list[dict]:
    """One judge request: every text of the prompt, in the order given, rated on one aspect.

    The reply form asked for is one `Text k: score - reason` line per text: the embedded 135M model follows it about
    two times in three, and it never followed UltraFeedback's `#### Output for Text k` blocks (measured; both are
    parsed, and JSON too)."""
    low, high = SCALES[aspect]
    rubric = OVERALL_RUBRIC if aspect == OVERALL else ASPECTS[aspect]
    shown = "\n\n".join(fill(TEXT["rating_text"], k=k, text=text) for k, text in enumerate(texts, 1))
    form = "\n".join(fill(TEXT["rating_form_line"], k=k) for k in range(1, len(texts) + 1))
    na = TEXT["rating_not_applicable"] if aspect == "honesty" else ""
    request = fill(TEXT["rating_request"], instruction=instruction, texts=shown, rubric=rubric, low=low, high=high,
                   na=na, form=form)
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": request}]


def _value(raw, aspect: str, k: int) -> tuple[float | None, str | None]:
    """A rating as a number (None for an allowed N/A), or why it is not one."""
    low, high = SCALES[aspect]
    shown = raw
    if isinstance(raw, str):
        if re.fullmatch(r"\s*n\s*/\s*a\s*", raw, re.I):
            return (None, None) if aspect == "honesty" else (None, f"text {k}: N/A is not allowed for {aspect}")
        try:
            raw = float(raw)
        except ValueError:
            return None, f"text {k}: rating {raw!r} is not a number"
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not low <= raw <= high:
        return None, f"text {k}: rating {shown!r} is outside {low}-{high}"
    return float(raw), None


def parse_ratings(text: str, n: int, aspect: str) -> tuple[list[dict] | None, str | None]:
    """`[{"rating": 4.0 | None (N/A), "rationale": str}] * n` in text order, or (None, why not).

    JSON (`LENIENT_RATINGS`; the values are checked here) first; else text blocks headed `Text k` with a `Rating:`
    line; else, with no headers, exactly n `Rating:` lines taken in order.
    """
    value, error = parse_json(text)
    if error is None and check(value, LENIENT_RATINGS) is None:
        found = {item["text"]: (item["rating"], item.get("rationale", "")) for item in value["ratings"]}
    else:
        found = _text_blocks(text or "", n)
    missing = [k for k in range(1, n + 1) if k not in found]
    if missing:
        return None, f"no {aspect} rating for text {missing[0]} of {n}"
    out = []
    for k in range(1, n + 1):
        raw, rationale = found[k]
        rating, error = _value(raw, aspect, k)
        if error:
            return None, error
        out.append({"rating": rating, "rationale": (rationale or "").strip()[:1000]})
    return out, None


def _text_blocks(text: str, n: int) -> dict[int, tuple[str, str]]:
    """{k: (rating, rationale)} from `Text k` headers, each followed by `Rating: X` or directly by the number."""
    headers = list(HEADER.finditer(text))
    if headers:
        blocks = {}
        for h, nxt in zip(headers, headers[1:] + [None]):
            body = text[h.end(): nxt.start() if nxt else len(text)]
            found = RATING.search(body) or LEADING.match(body)
            if found and int(h.group(1)) not in blocks:
                rationale = RATIONALE.search(body)
                rest = rationale.group(1) if rationale else body[found.end():].strip(" -:.,)(*\n").split("\n")[0]
                blocks[int(h.group(1))] = (found.group(1), rest)
        return blocks
    ratings = [m.group(1) for m in RATING.finditer(text)]
    if len(ratings) != n:
        return {}
    rationales = [m.group(1) for m in RATIONALE.finditer(text)]
    return {k: (r, rationales[k - 1] if k <= len(rationales) else "") for k, r in enumerate(ratings, 1)}


# --- one answer at a time (pointwise) and two at a time (pairwise) ------------------------------------------------
# Both put what is shared first and what varies last (judge instructions, rubric, the instruction, then the answers),
# so llama-server's prompt cache prefills the shared part once per prompt. Ratings are single digits: a tokenizer
# that splits "10" into "1" "0" cannot give an expected rating over a 1-10 scale in one token.
POINT_SCALE = (1, 9)


def point_schema() -> dict:
    return {"type": "object", "required": ["rating"], "additionalProperties": False,
            "properties": {"rating": {"type": "integer", "enum": list(range(POINT_SCALE[0], POINT_SCALE[1] + 1))}}}


def pair_schema() -> dict:
    return {"type": "object", "required": ["better"], "additionalProperties": False,
            "properties": {"better": {"type": "integer", "enum": [1, 2]}}}


def point_messages(instruction: str, answer: str) -> list[dict]:
    low, high = POINT_SCALE
    request = fill(TEXT["point_request"], rubric=TEXT["point_rubric"], instruction=instruction, answer=answer,
                   low=low, high=high)
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": request}]


def pair_messages(instruction: str, first: str, second: str) -> list[dict]:
    request = fill(TEXT["pair_request"], rubric=TEXT["pair_rubric"], instruction=instruction, first=first,
                   second=second)
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": request}]


NUMBER = re.compile(r"\b(\d+)\b")


def parse_choice(text: str, key: str, allowed: range) -> tuple[int | None, str | None]:
    """The integer under `key` in a JSON answer, else the first whole number of a text answer, if in `allowed`."""
    value, error = parse_json(text)
    if error is None and isinstance(value, dict) and key in value:
        found = value[key]
    else:
        match = NUMBER.search(text or "")
        found = int(match.group(1)) if match else None
    if isinstance(found, str) and found.strip().isdigit():
        found = int(found)
    if isinstance(found, bool) or not isinstance(found, int) or found not in allowed:
        return None, f"no {key} in {allowed.start}-{allowed.stop - 1} in the answer: {(text or '')[:80]!r}"
    return found, None


def digit_distribution(logprobs: list[dict] | None, allowed: range) -> dict[int, float] | None:
    """P(digit) at the first answer token that is one of the `allowed` digits, renormalized over them (as G-Eval
    weights ratings); None without logprobs or when no such token is found."""
    for token in logprobs or []:
        if (token.get("token") or "").strip() in {str(d) for d in allowed}:
            mass = {}
            for text, logprob in {**(token.get("top") or {}), token["token"]: token.get("logprob")}.items():
                text = (text or "").strip()
                if text.isdigit() and int(text) in allowed and logprob is not None:
                    mass[int(text)] = mass.get(int(text), 0.0) + math.exp(logprob)
            total = sum(mass.values())
            return {d: p / total for d, p in mass.items()} if total > 0 else None
    return None


def expected(distribution: dict[int, float]) -> float:
    return sum(d * p for d, p in distribution.items())


TOP_LOGPROBS = 10
POINT_DIGITS = range(POINT_SCALE[0], POINT_SCALE[1] + 1)
PAIR_DIGITS = range(1, 3)


def rating_request(aspect: str, instruction: str, texts: list[str], max_tokens: int) -> Request:
    """One listwise judge request: every text rated on `aspect`, greedy, as `ratings_schema` JSON."""
    return Request(rating_messages(aspect, instruction, texts), {"max_tokens": max_tokens, "temperature": 0.0},
                   schema=ratings_schema(len(texts), aspect),
                   parse=partial(parse_ratings, n=len(texts), aspect=aspect))


def judge_params(max_tokens: int) -> dict:
    """Sampling of a pointwise or pairwise judge request: greedy, with the top logprobs of every token. 48 tokens:
    the answer is a few tokens, but a small model pads grammar-enforced JSON with whitespace."""
    return {"max_tokens": min(max_tokens, 48), "temperature": 0.0, "logprobs": True, "top_logprobs": TOP_LOGPROBS}


def point_request(instruction: str, answer: str, max_tokens: int = 48) -> Request:
    """One pointwise judge request: `answer` rated 1-9 as a reply to `instruction`."""
    return Request(point_messages(instruction, answer), judge_params(max_tokens), schema=point_schema(),
                   parse=partial(parse_choice, key="rating", allowed=POINT_DIGITS))


def pair_request(instruction: str, first: str, second: str, max_tokens: int = 48) -> Request:
    """One pairwise judge request: which of two answers to `instruction` is better (1 = the first shown)."""
    return Request(pair_messages(instruction, first, second), judge_params(max_tokens), schema=pair_schema(),
                   parse=partial(parse_choice, key="better", allowed=PAIR_DIGITS))


def point_score(result) -> tuple[float, bool]:
    """A pointwise answer's score: the expected digit when the answer carries logprobs (True), else the sampled
    digit (False)."""
    distribution = digit_distribution(result.logprobs, POINT_DIGITS)
    return (expected(distribution), True) if distribution else (float(result.data), False)


def pair_first(result) -> tuple[float, bool]:
    """P(the answer shown first is better): from the logprobs of "1"/"2" when the answer carries them (True), else
    the sampled verdict (False)."""
    distribution = digit_distribution(result.logprobs, PAIR_DIGITS)
    return (distribution.get(1, 0.0), True) if distribution else (float(result.data == 1), False)
