"""A tool-use conversation in its three forms, and the turns between them.

- **OpenAI turns** (what is exported): assistant turns with `tool_calls` (`id`, `type`, `function` with `name` and
  `arguments` as a JSON string) and `tool` turns with `tool_call_id`; every turn has all four keys (`TOOL_MESSAGE`).
- **Canonical messages** (role and content, what validation, dedup, the review app and the leakage check read): a
  call is written as Hermes' `<tool_call>{"name", "arguments"}</tool_call>` text, as ingest writes one it reads.
- **Template turns** (`template_turns`): arguments parsed back into objects, as the chat templates of Qwen2.5 and
  Llama 3.x print them with `tojson`; `one_call_per_turn` splits parallel calls for templates that take one call
  per turn (Llama 3.1's raises on more).
"""

from __future__ import annotations

import copy
import json

from connectors.openai_messages import render_tool_calls


def call_id(row_id: str, round_: int, k: int) -> str:
    """A call id that is the same on every rerun: `call_<8 hex of the row>_<round>_<k>`."""
    return f"call_{row_id[:8]}_{round_}_{k}"


def call_key(name, arguments) -> str:
    """A call's identity: its name and arguments, key order aside (a repeated call, an AST match)."""
    return json.dumps([name, arguments], sort_keys=True)


def turn(role: str, content: str = "", tool_calls: list | None = None, tool_call_id: str | None = None) -> dict:
    return {"role": role, "content": content, "tool_calls": tool_calls, "tool_call_id": tool_call_id}


def assistant_calls(calls: list[tuple[str, str, dict]]) -> dict:
    """An assistant turn making `calls`: (id, name, arguments)."""
    return turn("assistant", "", [{"id": i, "type": "function", "function": {
        "name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}} for i, name, arguments in calls])


def tool_result(call: str, value) -> dict:
    """A tool turn answering call `call` with `value` (a result, or {"error": ...})."""
    return turn("tool", json.dumps(value, ensure_ascii=False), tool_call_id=call)


def canonical(turns: list[dict]) -> list[dict]:
    """OpenAI turns -> role/content messages, a call as `<tool_call>` text (what ingest makes of the same turns)."""
    out = []
    for t in turns:
        content = t.get("content") or ""
        if t.get("tool_calls"):
            calls = render_tool_calls(t["tool_calls"])
            content = f"{content}\n{calls}".strip() if content else calls
        out.append({"role": t["role"], "content": content})
    return out


def template_turns(turns: list[dict]) -> list[dict]:
    """The turns as chat templates print them: each call's `arguments` an object, keys a turn lacks left out."""
    out = []
    for t in turns:
        item = {k: v for k, v in t.items() if v is not None}
        if item.get("tool_calls"):
            item["tool_calls"] = [{**c, "function": {**c["function"], "arguments": json.loads(
                c["function"]["arguments"])}} for c in item["tool_calls"]]
        out.append(item)
    return out


def one_call_per_turn(turns: list[dict]) -> list[dict]:
    """Parallel calls as a sequence: each call in its own assistant turn, followed by its result."""
    out, results = [], {t.get("tool_call_id"): t for t in turns if t["role"] == "tool"}
    for t in turns:
        if t["role"] == "tool":
            continue
        if t["role"] == "assistant" and len(t.get("tool_calls") or []) > 1:
            for c in t["tool_calls"]:
                out += [{**copy.deepcopy(t), "tool_calls": [c]}, results[c["id"]]]
            continue
        out.append(t)
        for c in t.get("tool_calls") or []:
            out.append(results[c["id"]])
    return out


def renders_calls(tokenizer) -> bool:
    """Whether a tokenizer's chat template prints a call's name and a tool's result (SmolLM2's drops both)."""
    probe = [turn("user", "What is 2 + 2?"), assistant_calls([("call_0", "probe_tool_name", {"x": 1})]),
             tool_result("call_0", {"probe_result": 4})]
    try:
        text = tokenizer.apply_chat_template(template_turns(probe), tools=[PROBE_TOOL], tokenize=False)
    except Exception:  # noqa: BLE001 - a template that cannot take tools cannot print calls
        return False
    return "probe_tool_name" in text and "probe_result" in text


PROBE_TOOL = {"type": "function", "function": {
    "name": "probe_tool_name", "description": "a probe",
    "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}}


def training_texts(tokenizer, rows: list[tuple[list[dict], list[dict]]]) -> list[str]:
    """Each (turns, tools) row as the text SFT trains on: the chat template's own tool format where it has one, else
    the canonical messages with the tools listed in a system turn and the results as user turns (Hermes'
    convention, for templates such as SmolLM2's that print neither calls nor tools)."""
    if renders_calls(tokenizer):
        return [tokenizer.apply_chat_template(template_turns(turns), tools=tools or None, tokenize=False)
                for turns, tools in rows]
    return [tokenizer.apply_chat_template(hermes_messages(turns, tools), tokenize=False) for turns, tools in rows]


def hermes_messages(turns: list[dict], tools: list[dict]) -> list[dict]:
    """Role/content messages for a template without tools: the tools in the system turn, calls as `<tool_call>`
    text, each run of tool results one user turn of `<tool_response>` blocks."""
    listed = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    system = ("You can call these tools; write a call as <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call>."
              f"\n<tools>\n{listed}\n</tools>")
    out = [{"role": "system", "content": system}]
    for message in canonical(turns):
        if message["role"] == "system":
            out[0]["content"] = f"{message['content']}\n\n{system}"
        elif message["role"] == "tool":
            block = f"<tool_response>\n{message['content']}\n</tool_response>"
            if out[-1]["role"] == "user" and out[-1]["content"].startswith("<tool_response>"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block})
        else:
            out.append(message)
    return out
