"""UltraChat raw: `{"id", "data": [user, assistant, user, assistant, ...]}` (alternating plain strings)."""

from __future__ import annotations

from connectors.base import RecordError, extras

NAME = "ultrachat"
KIND = "conversation"


def matches(record: dict) -> bool:
    value = record.get("data")
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value[:2])


def convert(record: dict) -> list[dict]:
    turns = record["data"]
    if not isinstance(turns, list):
        raise RecordError(f"bad_field: 'data' is {type(turns).__name__}, not a list")
    messages = []
    for i, text in enumerate(turns):
        if not isinstance(text, str):
            raise RecordError(f"bad_field: data[{i}] is {type(text).__name__}, not text")
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return [{"messages": messages, "meta": extras(record, ("data",))}]
