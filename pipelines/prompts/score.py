"""DEITA-style scoring requests (`score.yaml`): an answer's quality and an instruction's complexity on 1..TOP, alone
or several instructions ranked together on one scale, as JSON with a rationale first."""

from __future__ import annotations

from pipelines.prompts import fill, load
from pipelines.teacher.wire import Request

PROMPT_FILE = "prompts/score.yaml"
TOP = 6
PARAMS = {"max_tokens": 128, "temperature": 0.0}
RATED = {"type": "object", "required": ["rationale", "score"], "additionalProperties": False,
         "properties": {"rationale": {"type": "string", "minLength": 1, "maxLength": 300},
                        "score": {"enum": list(range(1, TOP + 1))}}}


def ranked_schema(n: int) -> dict:
    keys = [str(k) for k in range(1, n + 1)]
    return {"type": "object", "required": ["rationale", "scores"], "additionalProperties": False,
            "properties": {"rationale": {"type": "string", "minLength": 1, "maxLength": 300},
                           "scores": {"type": "object", "required": keys, "additionalProperties": False,
                                      "properties": {k: {"enum": list(range(1, TOP + 1))} for k in keys}}}}


def _asked(content: str) -> list[dict]:
    return [{"role": "system", "content": load("score")["system"]}, {"role": "user", "content": content}]


def quality_request(instruction: str, answer: str) -> Request:
    """The quality of `answer` as a reply to `instruction`, 1..TOP (`RATED`)."""
    return Request(_asked(fill(load("score")["quality"], instruction=instruction, answer=answer)), PARAMS,
                   schema=RATED)


def complexity_request(instructions: list[str], anchor: str | None = None) -> Request:
    """One instruction's complexity 1..TOP (`RATED`), or, for several or with `anchor` (the text they were rewritten
    from, listed first), every one ranked on one scale (`ranked_schema`)."""
    text = load("score")
    if len(instructions) == 1 and anchor is None:
        return Request(_asked(fill(text["complexity"], instruction=instructions[0])), PARAMS, schema=RATED)
    if anchor is not None:
        instructions = [f"(the original the others were rewritten from) {anchor}", *instructions]
    listing = "\n\n".join(f"[{k}] {q}" for k, q in enumerate(instructions, 1))
    return Request(_asked(fill(text["rank_complexity"], top=TOP, listing=listing)),
                   {**PARAMS, "max_tokens": 64 + 12 * len(instructions)}, schema=ranked_schema(len(instructions)))
