"""A model's tool call, checked as data before anything runs: the tool exists, the arguments are a JSON object of
bounded size and depth with no NaN or Infinity, and they satisfy the tool's JSON Schema (every error named)."""

from __future__ import annotations

import json
from dataclasses import dataclass

MAX_ARGUMENT_CHARS = 65_536
MAX_DEPTH = 16


@dataclass
class CallError(Exception):
    reason: str  # unknown_tool | bad_arguments
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


def _constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def depth(value, limit: int) -> int:
    """Nesting depth of a parsed JSON value, stopping once past `limit`."""
    stack, deepest = [(value, 1)], 0
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def parse_arguments(text: str):
    """Arguments sent as a JSON string, parsed within the size limit (no NaN, no recursion past Python's), or
    `CallError("bad_arguments", ...)`."""
    if len(text) > MAX_ARGUMENT_CHARS:
        raise CallError("bad_arguments", f"{len(text):,} characters; the limit is {MAX_ARGUMENT_CHARS:,}")
    try:
        return json.loads(text or "{}", parse_constant=_constant)
    except (ValueError, RecursionError) as exc:
        raise CallError("bad_arguments", f"not JSON: {str(exc)[:200]}") from None


def check_arguments(tool: dict, arguments) -> dict:
    """The call's arguments as a dict, or `CallError("bad_arguments", ...)`. `tool`: an OpenAI function definition
    (`{"type": "function", "function": {"name", "parameters"}}`); `arguments`: a JSON string or a parsed value."""
    from jsonschema import Draft202012Validator

    if isinstance(arguments, str):
        arguments = parse_arguments(arguments)
    else:
        try:
            size = len(json.dumps(arguments, allow_nan=False))
        except (TypeError, ValueError, RecursionError) as exc:
            raise CallError("bad_arguments", f"not JSON data: {str(exc)[:200]}") from None
        if size > MAX_ARGUMENT_CHARS:
            raise CallError("bad_arguments", f"{size:,} characters; the limit is {MAX_ARGUMENT_CHARS:,}")
    if not isinstance(arguments, dict):
        raise CallError("bad_arguments", f"arguments are a JSON {type(arguments).__name__}, not an object")
    if depth(arguments, MAX_DEPTH) > MAX_DEPTH:
        raise CallError("bad_arguments", f"nested deeper than {MAX_DEPTH} levels")
    schema = tool.get("function", tool).get("parameters") or {"type": "object"}
    errors = sorted(Draft202012Validator(schema).iter_errors(arguments), key=lambda e: list(e.absolute_path))
    if errors:
        named = [f"{'.'.join(map(str, e.absolute_path)) or 'arguments'}: {e.message[:160]}" for e in errors[:5]]
        raise CallError("bad_arguments", "; ".join(named))
    return arguments


def find_tool(tools: list[dict], name) -> dict:
    """The definition called `name`, or `CallError("unknown_tool", ...)` listing the ones there are."""
    for tool in tools:
        if tool.get("function", tool).get("name") == name:
            return tool
    names = ", ".join(t.get("function", t).get("name", "?") for t in tools)
    raise CallError("unknown_tool", f"{str(name)[:80]!r} is not one of the tools offered ({names})")
