"""Structured outputs: pull a JSON object out of loosely written model text and check it against a JSON Schema.

Small models wrap JSON in prose or code fences, use single quotes or leave a trailing comma; `parse_json` tries the
text as it is, then each fenced block, then each balanced `{...}` span, each also with those two slips repaired.
`check` returns the first validation error as a sentence the model can act on when it is asked again.
"""

from __future__ import annotations

import json
import re

import jsonschema

FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)
TRAILING_COMMA = re.compile(r",\s*([}\]])")


def _balanced_objects(text: str):
    depth, start, quote, escaped = 0, None, None, False
    for i, ch in enumerate(text):
        if quote:
            escaped = not escaped and ch == "\\"
            if ch == quote and not escaped:
                quote = None
            continue
        if ch in "\"'" and depth:
            quote = ch
        elif ch == "{":
            start = i if depth == 0 else start
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                yield text[start:i + 1]


def _candidates(text: str):
    yield text.strip()
    yield from (block.strip() for block in FENCE.findall(text))
    yield from _balanced_objects(text)


def parse_json(text: str | None) -> tuple[object | None, str | None]:
    """(value, None) or (None, why not): `'Sure! {"score": 4,}'` -> `({"score": 4}, None)`."""
    if not text:
        return None, "empty answer"
    for candidate in _candidates(text):
        for variant in (candidate, TRAILING_COMMA.sub(r"\1", candidate),
                        TRAILING_COMMA.sub(r"\1", candidate.replace("'", '"'))):
            try:
                return json.loads(variant), None
            except ValueError:
                continue
    return None, "no JSON object found in the answer"


def check(value: object, schema: dict) -> str | None:
    """None when `value` matches `schema`, else the first error: `at $.score: 7 is greater than the maximum of 5`."""
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(value))
    if error is None:
        return None
    return f"at {error.json_path}: {error.message}"


def reask_message(error: str, schema: dict | None) -> dict:
    """The user turn that asks again after an invalid answer (in the format asked for when there is no schema)."""
    if schema is None:
        return {"role": "user", "content": f"That answer could not be read ({error}). Answer again, exactly in the "
                                           "format asked for, and nothing else."}
    return {"role": "user", "content": f"That answer is not valid ({error}). Reply with only a JSON object that "
                                       f"matches this JSON Schema, and nothing else:\n{json.dumps(schema)}"}
