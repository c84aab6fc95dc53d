"""Anthropic hh-rlhf: `{"chosen", "rejected"}`, each a whole dialogue as text in the `\\n\\nHuman: ...`
`\\n\\nAssistant: ...` layout. Both are split into turns; the shared turns become the prompt."""

from __future__ import annotations

import re

from connectors.base import RecordError, extras, pair
from connectors.preference import split_pair

NAME = "hh_rlhf"
CHAT_LOG = True  # real users wrote it: redacted by default
KINDS = ("preference",)
SPEAKER = re.compile(r"\n\n(Human|Assistant):[ \t]?")
ROLES = {"Human": "user", "Assistant": "assistant"}


def matches(record: dict) -> bool:
    chosen = record.get("chosen")
    return isinstance(chosen, str) and "\n\nHuman:" in chosen and "rejected" in record


def turns(text, field: str) -> list[dict]:
    if not isinstance(text, str):
        raise RecordError(f"bad_field: '{field}' is {type(text).__name__}, not text")
    parts = SPEAKER.split(text)
    if parts[0].strip():
        raise RecordError(f"bad_layout: '{field}' has text before the first 'Human:' turn")
    if len(parts) < 3:
        raise RecordError(f"bad_layout: '{field}' has no '\\n\\nHuman:' turn")
    return [{"role": ROLES[speaker], "content": content.strip()}
            for speaker, content in zip(parts[1::2], parts[2::2])]


def convert(record: dict) -> list[dict]:
    prompt, chosen, rejected = split_pair(turns(record["chosen"], "chosen"), turns(record["rejected"], "rejected"))
    return [pair(prompt, chosen, rejected, extras(record, ("chosen", "rejected")))]
