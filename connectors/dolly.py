"""Dolly: `{"instruction", "context", "response", "category"}`; the context follows the instruction."""

from __future__ import annotations

from connectors.alpaca import user_turn
from connectors.base import extras, text_field

NAME = "dolly"
KIND = "conversation"


def matches(record: dict) -> bool:
    return {"instruction", "context", "response"} <= record.keys()


def convert(record: dict) -> list[dict]:
    user = user_turn(text_field(record, "instruction"), text_field(record, "context", required=False))
    messages = [{"role": "user", "content": user},
                {"role": "assistant", "content": text_field(record, "response")}]
    return [{"messages": messages, "meta": extras(record, ("instruction", "context", "response"))}]
