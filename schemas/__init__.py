"""The data model, twice: JSON Schema files (validate records and LLM output) and pyarrow schemas (storage).

`tests/test_schemas.py` keeps the two in sync: Message, Conversation (SFT), Preference (DPO pairs, shaped like
ultrafeedback_binarized, with the pre-binarization `completions`) and Quarantine. `schemas.limits` names the size
limits on input records (nesting depth, record size, turns, content length) in one table.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

import orjson
import pyarrow as pa

SCHEMA_DIR = Path(__file__).parent

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

# The tool-use export's message (OpenAI's shape, as chat templates and TRL take it): an assistant turn's `tool_calls`
# (arguments as a JSON string) and a tool turn's `tool_call_id`; null where a turn has none. Export only: the
# canonical `messages` keep role and content, a tool call written as `<tool_call>` text (`pipelines.tools.chat`).
TOOL_CALL = pa.struct([("id", pa.string()), ("type", pa.string()),
                       ("function", pa.struct([("name", pa.string()), ("arguments", pa.string())]))])
TOOL_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string()), ("tool_calls", pa.list_(TOOL_CALL)),
                          ("tool_call_id", pa.string())])

CONVERSATION = pa.schema([
    ("id", pa.string()),
    ("messages", pa.list_(MESSAGE)),
    ("source", pa.string()),
    ("meta", pa.string()),
])

RATING = pa.struct([("aspect", pa.string()), ("rating", pa.float64()), ("rationale", pa.string())])

COMPLETION = pa.struct([
    ("model", pa.string()),
    ("principle", pa.string()),
    ("content", pa.string()),
    ("ratings", pa.list_(RATING)),
    ("overall", pa.float64()),
])

PREFERENCE = pa.schema([
    ("id", pa.string()),
    ("prompt_id", pa.string()),
    ("prompt", pa.string()),
    ("chosen", pa.list_(MESSAGE)),
    ("rejected", pa.list_(MESSAGE)),
    ("messages", pa.list_(MESSAGE)),
    ("score_chosen", pa.float64()),
    ("score_rejected", pa.float64()),
    ("chosen_model", pa.string()),
    ("rejected_model", pa.string()),
    ("completions", pa.list_(COMPLETION)),
    ("source", pa.string()),
    ("meta", pa.string()),
])

TEXT = pa.schema([("id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("meta", pa.string())])

QUARANTINE = pa.schema([
    ("stage", pa.string()),
    ("source", pa.string()),
    ("locator", pa.string()),
    ("reason", pa.string()),
    ("raw", pa.string()),
])

ARROW_SCHEMAS = {"conversation": CONVERSATION, "preference": PREFERENCE, "text": TEXT, "quarantine": QUARANTINE}


@cache
def json_schema(name: str) -> dict:
    """The JSON Schema document `schemas/<name>.schema.json`."""
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())


def canonical_json(value) -> bytes:
    """Compact UTF-8 JSON, the same bytes as json.dumps(ensure_ascii=False, separators=(",", ":"))."""
    try:
        return orjson.dumps(value)
    except TypeError:  # lone surrogates and other text orjson refuses
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def conversation_id(messages: list[dict]) -> str:
    """sha256 of the canonical messages: stable across runs, so exact dedup is unique(id)."""
    if not all(len(m) == 2 for m in messages):  # extra keys: keep only role and content
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    return hashlib.sha256(canonical_json(messages)).hexdigest()


def preference_id(chosen: list[dict], rejected: list[dict]) -> str:
    """sha256 of the canonical chosen and rejected conversations."""
    pair = [[{"role": m["role"], "content": m["content"]} for m in side] for side in (chosen, rejected)]
    return hashlib.sha256(canonical_json(pair)).hexdigest()


def prompt_id(prompt: str) -> str:
    """sha256 of the prompt text, as `prompt_id` in ultrachat_200k and ultrafeedback_binarized."""
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()


def text_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


from schemas.validate import check_conversation, check_preference, check_text  # noqa: E402  (re-export)

__all__ = ["MESSAGE", "TOOL_MESSAGE", "CONVERSATION", "PREFERENCE", "QUARANTINE", "json_schema", "conversation_id", "preference_id",
           "prompt_id",
           "check_conversation", "check_preference", "check_text"]
