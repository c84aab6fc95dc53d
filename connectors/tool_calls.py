"""Tool definitions and calls as the formats write them, read into one shape, or a `RecordError` naming the field.

Definitions become OpenAI function definitions (`{"type": "function", "function": {"name", "description",
"parameters"}}`), whether given that way, bare (`{"name", "description", "parameters"}`, Glaive, ShareGPT tool
sets), or with xLAM's parameters (`{"arg": {"type": "str", "description", "default"}}`, turned into a JSON Schema
object: Python type names mapped, an argument without a default required). A call becomes `{"name", "arguments"}`
with `arguments` an object, from JSON, a JSON string of arguments, or Glaive's single-quoted string.
"""

from __future__ import annotations

import ast
import json
import re

from connectors.base import RecordError

PYTHON_TYPES = {"str": "string", "string": "string", "int": "integer", "integer": "integer", "float": "number",
                "number": "number", "bool": "boolean", "boolean": "boolean", "list": "array", "array": "array",
                "dict": "object", "object": "object"}


def _json(value, where: str):
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise RecordError(f"bad_tool_field: {where} is not JSON ({exc.msg} at {exc.pos})") from None
    return value


def definitions(value, where: str = "tools") -> list[dict]:
    """A record's tool definitions (a list, or a JSON string of one) as OpenAI function definitions."""
    value = _json(value, where)
    if value is None:
        return []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise RecordError(f"bad_tool_field: {where} is a {type(value).__name__}, not a list of tools")
    return [definition(item, f"{where}[{i}]") for i, item in enumerate(value)]


def definition(item, where: str) -> dict:
    if not isinstance(item, dict):
        raise RecordError(f"bad_tool_field: {where} is a {type(item).__name__}, not a tool definition")
    function = item.get("function", item) if item.get("type", "function") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise RecordError(f"bad_tool_field: {where} has no function name")
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise RecordError(f"bad_tool_field: {where}.parameters is a {type(parameters).__name__}, not an object")
    if parameters.get("type") != "object" and all(isinstance(v, dict) for v in parameters.values()):
        parameters = from_xlam(parameters)
    return {"type": "function", "function": {"name": function["name"], "description": str(
        function.get("description") or ""), "parameters": parameters}}


def from_xlam(parameters: dict) -> dict:
    """xLAM's `{"arg": {"type": "List[int]", "description", "default"}}` as a JSON Schema object."""
    properties, required = {}, []
    for name, spec in parameters.items():
        base = re.split(r"[\[,\s]", str(spec.get("type", "string")))[0].lower()
        properties[name] = {"type": PYTHON_TYPES.get(base, "string"), "description": str(spec.get("description", ""))}
        if "default" not in spec and "optional" not in str(spec.get("type", "")).lower():
            required.append(name)
    return {"type": "object", "properties": properties, "required": required}


GLAIVE_ARGUMENTS = re.compile(r"""("arguments"\s*:\s*)'(.*)'(\s*}\s*)$""", re.S)


def call(value, where: str) -> dict:
    """One call as `{"name", "arguments"}`: from an OpenAI tool call (`function`), a `{"name", "arguments"}` object
    or its JSON text (Glaive's `'...'` quoted arguments too), arguments given as an object or a JSON string."""
    if isinstance(value, str):
        text = GLAIVE_ARGUMENTS.sub(lambda m: m.group(1) + json.dumps(m.group(2)) + m.group(3), value.strip())
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            try:  # Hermes' datasets write Python dict reprs ({'name': ..., 'arguments': {...}})
                value = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                raise RecordError(f"bad_tool_call: {where} is not a JSON call") from None
    if not isinstance(value, dict):
        raise RecordError(f"bad_tool_call: {where} is a {type(value).__name__}, not a call")
    function = value.get("function", value)
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or not name:
        raise RecordError(f"bad_tool_call: {where} has no function name")
    arguments = function.get("arguments", function.get("parameters", {}))
    arguments = _json(arguments, f"{where} arguments") if arguments != "" else {}
    if not isinstance(arguments, dict):
        raise RecordError(f"bad_tool_call: {where} arguments are a {type(arguments).__name__}, not an object")
    return {"name": name, "arguments": arguments}


def render(calls: list[dict]) -> str:
    """Calls as Hermes' `<tool_call>` lines, the text the canonical messages keep."""
    return "\n".join("<tool_call>\n" + json.dumps(c, ensure_ascii=False) + "\n</tool_call>" for c in calls)


TOOL_CALL_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)


def normalize_calls_text(text: str, where: str) -> str:
    """An assistant turn holding `<tool_call>` blocks (Hermes), each call checked and written as JSON."""
    blocks = TOOL_CALL_BLOCK.findall(text)
    if not blocks:
        return text
    before = text[: text.index("<tool_call>")].strip()
    calls = render([call(b, f"{where} <tool_call> {k}") for k, b in enumerate(blocks)])
    return f"{before}\n{calls}" if before else calls
