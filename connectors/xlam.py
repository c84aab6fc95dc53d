"""xLAM / APIGen function calling (Salesforce/xlam-function-calling-60k): `{"id", "query", "tools", "answers"}`,
`tools` and `answers` JSON strings: the functions (parameters as `{"arg": {"type": "str", "description",
"default"}}`, read into a JSON Schema) and the verified calls. A conversation of the query and one assistant turn
making the calls (`<tool_call>` lines); no results or final answer are in the data.
"""

from __future__ import annotations

import json

from connectors import tool_calls
from connectors.base import RecordError, extras, text_field

NAME = "xlam"
KIND = "conversation"


def matches(record: dict) -> bool:
    return {"query", "tools", "answers"} <= record.keys()


def convert(record: dict) -> list[dict]:
    tools = tool_calls.definitions(record["tools"])
    answers = record["answers"]
    if isinstance(answers, str):
        try:
            answers = json.loads(answers)
        except json.JSONDecodeError as exc:
            raise RecordError(f"bad_tool_call: answers is not JSON ({exc.msg} at {exc.pos})") from None
    if not isinstance(answers, list) or not answers:
        raise RecordError("bad_tool_call: answers is not a non-empty list of calls")
    calls = [tool_calls.call(a, f"answers[{i}]") for i, a in enumerate(answers)]
    messages = [{"role": "user", "content": text_field(record, "query")},
                {"role": "assistant", "content": tool_calls.render(calls)}]
    return [{"messages": messages, "tools": tools, "meta": extras(record, ("query", "tools", "answers"))}]
