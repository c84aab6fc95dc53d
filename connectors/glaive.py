"""Glaive function calling (glaiveai/glaive-function-calling-v2): `{"system": "SYSTEM: ... -\n{function JSON}...",
"chat": "USER: ... ASSISTANT: <functioncall> {...} <|endoftext|> FUNCTION RESPONSE: {...} ASSISTANT: ..."}`.

The functions after the system text's first `-` (JSON objects one after another) become the `tools`; the system
text before them stays the system turn. Turns are split at their `USER:`, `ASSISTANT:` and `FUNCTION RESPONSE:`
markers; a `<functioncall>` (arguments in Glaive's single quotes) becomes a `<tool_call>` line, a function response
a tool turn. A call that is not JSON quarantines the record with its turn.
"""

from __future__ import annotations

import json
import re

from connectors import tool_calls
from connectors.base import RecordError, extras, text_field

NAME = "glaive"
KIND = "conversation"
MARKER = re.compile(r"(?:^|\n)\s*(USER|ASSISTANT|FUNCTION RESPONSE):\s*")
ROLES = {"USER": "user", "ASSISTANT": "assistant", "FUNCTION RESPONSE": "tool"}


def matches(record: dict) -> bool:
    return isinstance(record.get("chat"), str) and "system" in record and "USER:" in record["chat"]


def functions(system: str) -> tuple[str, list[dict]]:
    """(the system text before the functions, the functions as definitions)."""
    text = system.removeprefix("SYSTEM:").strip()
    start = text.find("{")
    if start < 0:
        return text, []
    head, rest, found, decoder = text[:start].rstrip(" -\n"), text[start:], [], json.JSONDecoder()
    while rest.strip():
        try:
            item, end = decoder.raw_decode(rest.strip())
        except json.JSONDecodeError as exc:
            raise RecordError(f"bad_tool_field: system function {len(found)} is not JSON ({exc.msg})") from None
        found.append(item)
        rest = rest.strip()[end:]
    return head, tool_calls.definitions(found, "system functions")


def convert(record: dict) -> list[dict]:
    head, tools = functions(text_field(record, "system", required=False))
    chat = text_field(record, "chat")
    parts = MARKER.split(chat)
    messages = [{"role": "system", "content": head}] if head else []
    for k in range(1, len(parts) - 1, 2):
        role, content = ROLES[parts[k]], parts[k + 1].replace("<|endoftext|>", "").strip()
        if role == "assistant" and content.startswith("<functioncall>"):
            content = tool_calls.render([tool_calls.call(content.removeprefix("<functioncall>"),
                                                         f"chat turn {k // 2}")])
        messages.append({"role": role, "content": content})
    if messages and messages[-1]["role"] == "user" and not messages[-1]["content"]:
        messages.pop()  # the dataset's chats end with an empty "USER:" marker
    return [{"messages": messages, "tools": tools, "meta": extras(record, ("system", "chat"))}]
