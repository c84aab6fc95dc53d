"""Question/answer rows such as GSM8K: `{"question", "answer"}` (also `query`/`response`)."""

from __future__ import annotations

from connectors.base import extras, text_field

NAME = "qa"
KIND = "conversation"
KEYS = (("question", "answer"), ("query", "response"))


def matches(record: dict) -> bool:
    return any(q in record and a in record for q, a in KEYS)


def convert(record: dict) -> list[dict]:
    q, a = next(((q, a) for q, a in KEYS if q in record and a in record), KEYS[0])
    messages = [{"role": "user", "content": text_field(record, q)},
                {"role": "assistant", "content": text_field(record, a)}]
    return [{"messages": messages, "meta": extras(record, (q, a))}]
