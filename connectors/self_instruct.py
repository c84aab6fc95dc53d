"""Self-Instruct seed tasks: `{"id", "name", "instruction", "instances": [{"input", "output"}], "is_classification"}`.

Each instance is one conversation (instruction, then its input), numbered in `meta.instance`.
"""

from __future__ import annotations

from connectors.alpaca import user_turn
from connectors.base import RecordError, extras, text_field

NAME = "self_instruct"
KIND = "conversation"


def matches(record: dict) -> bool:
    return "instruction" in record and isinstance(record.get("instances"), list)


def convert(record: dict) -> list[dict]:
    instruction = text_field(record, "instruction")
    meta = extras(record, ("instruction", "instances"))
    if not record["instances"]:
        raise RecordError("empty: the task has no instances")
    items = []
    for i, instance in enumerate(record["instances"]):
        if not isinstance(instance, dict):
            raise RecordError(f"bad_field: instances[{i}] is {type(instance).__name__}, not an object")
        messages = [{"role": "user", "content": user_turn(instruction, text_field(instance, "input", False))},
                    {"role": "assistant", "content": text_field(instance, "output")}]
        items.append({"messages": messages, "meta": {**meta, "instance": i}})
    return items
