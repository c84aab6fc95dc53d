"""ShareGPT / Vicuna: `{"id", "conversations": [{"from", "value"}, ...]}`.

Speaker names seen in the wild are mapped: human, user, prompter -> user; gpt, assistant, chatgpt, bing, bard,
model, bot, claude -> assistant; system -> system; function_call -> assistant; observation, function, tool ->
tool. Turns given as `{"role", "content"}` are read too. Any other speaker makes the record unusable, with its name.

Tool use (LLaMA-Factory's `function_call`/`observation` turns, Hermes function calling's `<tool_call>` blocks): a
call is checked and written as a `<tool_call>` line (`connectors.tool_calls`), one that is not a call quarantines
the record naming its turn; the record's `tools` (a list or a JSON string) become the row's `tools`.
"""

from __future__ import annotations

from connectors import tool_calls
from connectors.base import RecordError

NAME = "sharegpt"
CHAT_LOG = True  # real users wrote it: redacted by default
KIND = "conversation"
ROLES = {
    "human": "user", "user": "user", "prompter": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bing": "assistant",
    "bard": "assistant", "model": "assistant", "bot": "assistant", "claude": "assistant",
    "function_call": "assistant",
    "system": "system",
    "observation": "tool", "function": "tool", "tool": "tool",
}


def matches(record: dict) -> bool:
    value = record.get("conversations")
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict)


def convert(record: dict) -> list[dict]:
    turns = record["conversations"]
    if type(turns) is not list:
        raise RecordError(f"bad_field: 'conversations' is {type(turns).__name__}, not a list")
    messages = []
    for i, turn in enumerate(turns):
        try:
            speaker, content = turn["from"], turn["value"]
        except (KeyError, TypeError):
            speaker, content = _speaker_and_text(turn, i)
        role = ROLES.get(speaker) or (ROLES.get(speaker.lower()) if isinstance(speaker, str) else None)
        if role is None:
            raise RecordError(f"unknown_role: {speaker!r} at conversations[{i}]")
        if type(content) is not str:
            raise RecordError(f"bad_field: conversations[{i}] value is {type(content).__name__}, not text")
        if speaker == "function_call":
            content = tool_calls.render([tool_calls.call(content, f"conversations[{i}]")])
        elif role == "assistant":
            content = tool_calls.normalize_calls_text(content, f"conversations[{i}]")
        messages.append({"role": role, "content": content})
    meta = record.copy()
    del meta["conversations"]
    tools = tool_calls.definitions(meta.pop("tools")) if meta.get("tools") else []
    return [{"messages": messages, "meta": meta, **({"tools": tools} if tools else {})}]


def _speaker_and_text(turn, i: int):
    if not isinstance(turn, dict):
        raise RecordError(f"bad_field: conversations[{i}] is {type(turn).__name__}, not an object")
    return turn.get("from", turn.get("role")), turn.get("value", turn.get("content"))
