"""LMSYS-Chat-1M: `{"conversation_id", "model", "conversation": [{"role", "content"}], "turn", "language",
"openai_moderation", "redacted"}`; everything but the conversation (moderation fields included) stays in `meta`."""

from __future__ import annotations

from connectors.base import extras
from connectors.openai_messages import to_messages

NAME = "lmsys"
CHAT_LOG = True  # real users wrote it: redacted by default
KIND = "conversation"


def matches(record: dict) -> bool:
    value = record.get("conversation")
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "role" in value[0]


def convert(record: dict) -> list[dict]:
    meta = extras(record, ("conversation",))
    return [{"messages": to_messages(record["conversation"], meta, "conversation"), "meta": meta}]
