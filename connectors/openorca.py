"""OpenOrca: `{"id", "system_prompt", "question", "response"}`; a non-empty system prompt is a system message."""

from __future__ import annotations

from connectors.base import extras, text_field

NAME = "openorca"
KIND = "conversation"


def matches(record: dict) -> bool:
    return {"system_prompt", "question", "response"} <= record.keys()


def convert(record: dict) -> list[dict]:
    system = text_field(record, "system_prompt", required=False)
    messages = [{"role": "system", "content": system}] if system.strip() else []
    messages += [{"role": "user", "content": text_field(record, "question")},
                 {"role": "assistant", "content": text_field(record, "response")}]
    return [{"messages": messages, "meta": extras(record, ("system_prompt", "question", "response"))}]
