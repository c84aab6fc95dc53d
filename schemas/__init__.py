"""The data model, twice: JSON Schema files (validate records and LLM output) and pyarrow schemas (storage).

`tests/test_schemas.py` keeps the two in sync. Message, Conversation and Quarantine are defined here;
see ../DESIGN.md for Preference, which arrives with the feedback recipe.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

import pyarrow as pa

SCHEMA_DIR = Path(__file__).parent

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

CONVERSATION = pa.schema([
    ("id", pa.string()),
    ("messages", pa.list_(MESSAGE)),
    ("source", pa.string()),
    ("meta", pa.string()),
])

QUARANTINE = pa.schema([
    ("stage", pa.string()),
    ("source", pa.string()),
    ("locator", pa.string()),
    ("reason", pa.string()),
    ("raw", pa.string()),
])

ARROW_SCHEMAS = {"conversation": CONVERSATION, "quarantine": QUARANTINE}


@cache
def json_schema(name: str) -> dict:
    """The JSON Schema document `schemas/<name>.schema.json`."""
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())


def conversation_id(messages: list[dict]) -> str:
    """sha256 of the canonical messages: stable across runs, so exact dedup is unique(id)."""
    canon = json.dumps([{"role": m["role"], "content": m["content"]} for m in messages],
                       ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


from schemas.validate import check_conversation  # noqa: E402  (re-export)

__all__ = ["MESSAGE", "CONVERSATION", "QUARANTINE", "json_schema", "conversation_id", "check_conversation"]
