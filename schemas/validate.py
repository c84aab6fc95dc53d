"""Record validation: JSON Schema first, then the turn-order rules JSON Schema cannot express."""

from __future__ import annotations

from functools import cache

import jsonschema


@cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    from schemas import json_schema

    return jsonschema.Draft202012Validator(json_schema(name))


def check_conversation(record: dict) -> str | None:
    """Return None if `record` is a valid SFT conversation, else a short reason.

    [system?] user assistant user assistant ... ending with assistant -> None
    [user, user, assistant] -> "turns do not alternate at message 1: user after user"
    """
    error = jsonschema.exceptions.best_match(_validator("conversation").iter_errors(record))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "record"
        return f"schema: {where}: {error.message[:200]}"
    roles = [m["role"] for m in record["messages"]]
    start = 1 if roles[0] == "system" else 0
    expected = "user"
    for i, role in enumerate(roles[start:], start):
        if role == "tool":
            continue
        if role != expected:
            return f"turns do not alternate at message {i}: {role} where {expected} was expected"
        expected = "assistant" if role == "user" else "user"
    if roles[-1] != "assistant":
        return "conversation does not end with an assistant turn"
    return None
