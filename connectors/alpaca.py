"""Alpaca: `{"instruction", "input", "output"}`; an empty input or `<noinput>` means the instruction stands alone.

The user turn is the instruction, then a blank line and the input. Also reads AlpacaEval-style rows (no `input`)
and GPTeacher rows (`response` instead of `output`).
"""

from __future__ import annotations

from connectors.base import extras, text_field

NAME = "alpaca"
KIND = "conversation"
NO_INPUT = {"", "<noinput>", "<no input>", "noinput"}


def matches(record: dict) -> bool:
    return "instruction" in record and ("output" in record or ("response" in record and "input" in record))


def user_turn(instruction: str, extra: str) -> str:
    extra = extra.strip()
    return f"{instruction}\n\n{extra}" if extra.lower() not in NO_INPUT else instruction


def convert(record: dict) -> list[dict]:
    answer_key = "response" if "response" in record and "output" not in record else "output"
    user = user_turn(text_field(record, "instruction"), text_field(record, "input", required=False))
    messages = [{"role": "user", "content": user},
                {"role": "assistant", "content": text_field(record, answer_key)}]
    return [{"messages": messages, "meta": extras(record, ("instruction", "input", answer_key))}]
