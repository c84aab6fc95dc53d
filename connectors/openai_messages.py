"""OpenAI / TRL conversational: `{"messages": [{"role", "content"}, ...]}`, with tools.

Roles system, user, assistant, tool (and `developer`, read as system). Content given as a list of parts keeps the
text parts; any other part (an image) makes the record unusable here. An assistant turn's `tool_calls` are kept in
`meta.tool_calls` by message index and, when the turn has no text, written into its content as
`<tool_call>{"name": ..., "arguments": ...}</tool_call>` lines (the Hermes convention chat templates use); a tool
turn's `tool_call_id`/`name` go to `meta.tool_results`, and the record's `tools` become the row's `tools`. A call
without a function name, or whose arguments are not a JSON object, quarantines the record naming its turn.
"""

from __future__ import annotations


from connectors import tool_calls
from connectors.base import RecordError, extras

NAME = "messages"
CHAT_LOG = True  # real users wrote it: redacted by default
KIND = "conversation"
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


def matches(record: dict) -> bool:
    value = record.get("messages")
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "role" in value[0]


def text_of(content, where: str) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        kinds = {part.get("type") for part in content if isinstance(part, dict)}
        if kinds - {"text"}:
            raise RecordError(f"unsupported: {where} has {', '.join(sorted(map(str, kinds - {'text'})))} content")
        return "".join(part.get("text") or "" for part in content)
    raise RecordError(f"bad_field: {where} content is {type(content).__name__}")


def render_tool_calls(calls: list, where: str = "tool_calls") -> str:
    """OpenAI tool calls as `<tool_call>` lines, each checked (`connectors.tool_calls.call`)."""
    if not isinstance(calls, list):
        raise RecordError(f"bad_tool_call: {where} is a {type(calls).__name__}, not a list")
    return tool_calls.render([tool_calls.call(c, f"{where}[{k}]") for k, c in enumerate(calls)])


def to_messages(turns: list, meta: dict, field: str = "messages") -> list[dict]:
    """OpenAI-style turns -> canonical messages, tool details into `meta`."""
    if not isinstance(turns, list):
        raise RecordError(f"bad_field: '{field}' is {type(turns).__name__}, not a list")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise RecordError(f"bad_field: {field}[{i}] is {type(turn).__name__}, not an object")
        role = ROLES.get(turn.get("role"))
        if role is None:
            raise RecordError(f"unknown_role: {turn.get('role')!r} at {field}[{i}]")
        content = text_of(turn.get("content"), f"{field}[{i}]")
        if turn.get("tool_calls"):
            meta.setdefault("tool_calls", {})[str(i)] = turn["tool_calls"]
            calls = render_tool_calls(turn["tool_calls"], f"{field}[{i}].tool_calls")
            if not content.strip():
                content = calls
        if role == "tool" and (turn.get("tool_call_id") or turn.get("name")):
            meta.setdefault("tool_results", {})[str(i)] = {k: turn[k] for k in ("tool_call_id", "name") if k in turn}
        out.append({"role": role, "content": content})
    return out


def convert(record: dict) -> list[dict]:
    meta = extras(record, ("messages",))
    messages = to_messages(record["messages"], meta)
    tools = tool_calls.definitions(meta.pop("tools")) if meta.get("tools") else []
    return [{"messages": messages, "meta": meta, **({"tools": tools} if tools else {})}]
