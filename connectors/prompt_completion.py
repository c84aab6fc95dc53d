"""TRL prompt-completion: `{"prompt", "completion"}`, both strings or both message lists."""

from __future__ import annotations

from connectors.base import RecordError, extras
from connectors.openai_messages import to_messages

NAME = "prompt_completion"
KIND = "conversation"


def matches(record: dict) -> bool:
    return "prompt" in record and "completion" in record


def as_turns(value, role: str, meta: dict, field: str) -> list[dict]:
    """A string is one turn of `role`; a list is OpenAI-style messages."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list):
        return to_messages(value, meta, field)
    raise RecordError(f"bad_field: '{field}' is {type(value).__name__}, not text or messages")


def convert(record: dict) -> list[dict]:
    meta = extras(record, ("prompt", "completion"))
    messages = as_turns(record["prompt"], "user", meta, "prompt")
    messages += as_turns(record["completion"], "assistant", meta, "completion")
    return [{"messages": messages, "meta": meta}]
