"""Requests and readers of the tool_use recipe (`tool_use.yaml`): a user request of a kind, the next calls as
grammar-enforced JSON, and the final answer from the results."""

from __future__ import annotations

import json
import re

from pipelines.prompts import fill, load
from pipelines.tools.validate import CallError, parse_arguments

PROMPT_FILE = "prompts/tool_use.yaml"
KINDS = ("single", "parallel", "sequential", "no_tool", "unserviceable")
NEEDS_TOOLS = ("single", "parallel", "sequential")
LOOSE = ("maxLength", "minLength", "pattern", "maximum", "minimum", "description", "format")
MAX_CALLS_PER_ROUND = 4
PREAMBLE = re.compile(r"^\s*(sure|certainly|of course|here is|here's|i'd be happy|i would be happy|absolutely)\b",
                      re.I)
IDENTIFIER = re.compile(r"_|[a-z][A-Z]")  # a tool name no request says by chance (`weekday` is a word)
NARRATES = re.compile(r"^\s*(the|this) (person|user)\b", re.I)  # "The person replies with ...": about the user
CODE = re.compile(r"^\s*(```|[{\[])")  # a definition or JSON echoed back, not a person's words


def listed(tools: list[dict]) -> str:
    return "\n".join(json.dumps(t["function"], ensure_ascii=False) for t in tools)


def request_messages(tools: list[dict], kind: str, persona: str) -> list[dict]:
    text = load("tool_use")
    return [{"role": "system", "content": text["request"]["system"]},
            {"role": "user", "content": fill(text["request"]["request"], tools=listed(tools), persona=persona,
                                             kind=text["kinds"][kind])}]


def clean_request(text: str | None) -> str:
    """The request alone: without a `Request:` label, quotes, or a "Sure, here's a request ...:" line before it."""
    text = (text or "").strip()
    lines = text.splitlines()
    if len(lines) > 1 and PREAMBLE.match(lines[0]) and lines[0].rstrip().endswith(":"):
        text = "\n".join(lines[1:]).strip()
    text = re.sub(r"^\s*(\*\*)?(user )?request(\*\*)?\s*:\s*", "", text, flags=re.I)
    return text.strip().strip('"').strip()


def request_problem(request: str, tools: list[dict]) -> str | None:
    if not request:
        return "empty_request: no text"
    if PREAMBLE.match(request):
        return "not_a_request: it answers the instruction instead of being a user's request"
    if NARRATES.match(request):
        return "not_a_request: it describes the user instead of speaking as them"
    if CODE.match(request):
        return "not_a_request: it is code or JSON, not a person's words"
    if len(request.split()) > 80:
        return "too_long: more than 80 words"
    named = [name for name in (t["function"]["name"] for t in tools) if IDENTIFIER.search(name) and name in request]
    if named:
        return f"names_the_tool: the request says {named[0]!r}"
    return None


def loose(schema):
    """A tool's parameters for the grammar: types, properties, enums and required keys, without the bounds that
    blow up llama.cpp's grammar (a maxLength of 2000 is 2000 repeated rules); the bounds are checked after."""
    if isinstance(schema, dict):
        return {k: loose(v) for k, v in schema.items() if k not in LOOSE}
    if isinstance(schema, list):
        return [loose(v) for v in schema]
    return schema


def calls_schema(tools: list[dict]) -> dict:
    """JSON Schema of a decision: a thought, whether tools are needed, then `tool_calls`, each one of the tools with
    its (loosened) parameters."""
    options = [{"type": "object", "properties": {"name": {"const": t["function"]["name"]},
                                                 "arguments": loose(t["function"].get("parameters") or {})},
                "required": ["name", "arguments"], "additionalProperties": False} for t in tools]
    return {"type": "object", "properties": {
        "thought": {"type": "string"},  # before the decision: without it the embedded 1.5B said needs_tools in 16
        "needs_tools": {"type": "boolean"},  # of 16 samples of no-tool requests, with it in 4 of 9
        "tool_calls": {"type": "array", "maxItems": MAX_CALLS_PER_ROUND, "items": {"anyOf": options}}},
        "required": ["thought", "needs_tools", "tool_calls"], "additionalProperties": False}


def calls_of(decision) -> list | None:
    """The calls a decision asks for: none when it says no tool is needed (whatever it listed), None when it is
    not a decision."""
    if not isinstance(decision, dict) or not isinstance(decision.get("tool_calls"), list):
        return None
    return decision["tool_calls"] if decision.get("needs_tools", True) else []


def offered(tools: list[dict]) -> list[dict]:
    """Tools as OpenAI definitions, without our own keys (`simulated`, `returns`)."""
    return [{"type": "function", "function": t["function"]} for t in tools]


def native_messages(turns: list[dict]) -> list[dict]:
    """The conversation so far as an endpoint that takes `tools` reads it: a system turn, then the OpenAI turns
    without the keys a turn lacks."""
    return [{"role": "system", "content": load("tool_use")["decide"]["native_system"]},
            *({k: v for k, v in t.items() if v is not None} for t in turns)]


def native_calls(calls: list[dict] | None) -> list[dict]:
    """The calls an endpoint parsed (`Result.tool_calls`), arguments as objects through the argument check's own
    parser: a string it refuses (not JSON, too long, too deep) stays a string, which the check then refuses as
    `bad_arguments`; none when it answered instead."""
    out = []
    for call in calls or []:
        arguments = call.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = parse_arguments(arguments)
            except CallError:
                pass
        out.append({"name": call.get("name"), "arguments": arguments})
    return out


def results_text(done: list[dict]) -> str:
    """Calls made so far and what each returned: [{"name", "arguments", "result" | "error"}]."""
    return json.dumps(done, ensure_ascii=False, indent=1)


def earlier_text(earlier: dict | None) -> str:
    """The exchange before a follow-up, as the decision and the answer see it ("" when there was none)."""
    if not earlier:
        return ""
    results = f"Tool results:\n{results_text(earlier['done'])}\n" if earlier["done"] else ""
    return fill(load("tool_use")["earlier"], request=earlier["request"], results=results, answer=earlier["answer"])


def decide_messages(tools: list[dict], request: str, done: list[dict], earlier: dict | None = None) -> list[dict]:
    text = load("tool_use")["decide"]
    user = earlier_text(earlier) + request
    user = f"{user}\n\n{fill(text['results'], results=results_text(done))}" if done else user
    return [{"role": "system", "content": fill(text["system"], tools=listed(tools))}, {"role": "user", "content": user}]


def answer_messages(request: str, done: list[dict], earlier: dict | None = None) -> list[dict]:
    text = load("tool_use")["answer"]
    user = fill(text["with_results"], request=request, results=results_text(done)) if done else request
    return [{"role": "system", "content": text["system"]}, {"role": "user", "content": earlier_text(earlier) + user}]


JUDGE_SCHEMA = {"type": "object", "properties": {"reason": {"type": "string"}, "faithful": {"type": "boolean"}},
                "required": ["reason", "faithful"], "additionalProperties": False}


def judge_messages(request: str, done: list[dict], answer: str) -> list[dict]:
    """Whether an answer states the tool results it had faithfully: JSON {"reason", "faithful"}."""
    text = load("tool_use")["judge"]
    return [{"role": "system", "content": fill(text["system"])},
            {"role": "user", "content": fill(text["request"], request=request, results=results_text(done),
                                             answer=answer)}]


def follow_up_messages(tools: list[dict], request: str, answer: str, kind: str, persona: str) -> list[dict]:
    """The teacher, as the user, writes the next message of the conversation: a follow-up of `kind`."""
    text = load("tool_use")
    return [{"role": "system", "content": text["follow_up"]["system"]},
            {"role": "user", "content": fill(text["follow_up"]["request"], tools=listed(tools), persona=persona,
                                             request=request, answer=answer, kind=text["kinds"][kind])}]


def simulate_messages(tool: dict, arguments: dict) -> list[dict]:
    """The teacher plays a simulated tool: its definition and the call's arguments -> the JSON result."""
    text = load("tool_use")["simulate"]
    return [{"role": "system", "content": text["system"]},
            {"role": "user", "content": fill(text["request"], tool=json.dumps(tool["function"], ensure_ascii=False),
                                             arguments=json.dumps(arguments, ensure_ascii=False))}]
