"""The size limits on input records, named in one place.

| limit               | value                        | what it bounds                                               |
|---------------------|------------------------------|--------------------------------------------------------------|
| `MAX_DEPTH`         | 512 levels of `[` and `{`    | JSON nesting: json recurses, pyarrow's reader crashes deeper  |
| `MAX_RECORD_BYTES`  | 16 MiB                       | one JSONL line, JSON array element, CSV row or text file      |
| `MAX_TURNS`         | `maxItems` of `messages`     | read from conversation.schema.json                            |
| `MAX_CONTENT_CHARS` | `maxLength` of a content     | read from conversation.schema.json                            |
| `MAX_TEXT_CHARS`    | `maxLength` of `text`        | read from text.schema.json                                    |
| `MAX_RAW_BYTES`     | 64 KiB                       | the raw text kept of a quarantined record                     |

A record over a limit is quarantined with a reason that names it (`too_deep: nesting > 512`,
`too_large: 31,457,280 bytes > 16 MiB`, `too_many_turns: 5,000 > 256`,
`too_long: content of 200,000 characters > 100,000`): never a crash, never a cut-off dump of the record.
"""

from __future__ import annotations

from schemas import json_schema

MAX_DEPTH = 512
MAX_RECORD_BYTES = 16 << 20
MAX_RAW_BYTES = 64 << 10
MAX_TURNS = json_schema("conversation")["properties"]["messages"]["maxItems"]
MAX_CONTENT_CHARS = json_schema("conversation")["$defs"]["message"]["properties"]["content"]["maxLength"]
MAX_TEXT_CHARS = json_schema("text")["properties"]["text"]["maxLength"]


def size(n: int) -> str:
    """16777216 -> '16 MiB', 65536 -> '64 KiB'."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n:,} bytes"


def too_deep() -> str:
    return f"too_deep: nesting > {MAX_DEPTH}"


def too_large(n_bytes: int) -> str:
    return f"too_large: {n_bytes:,} bytes > {size(MAX_RECORD_BYTES)}"


def messages_problem(messages) -> str | None:
    """The reason a message list breaks the turn or content limit, else None (other faults are the schema's)."""
    if type(messages) is not list:
        return None
    if len(messages) > MAX_TURNS:
        return f"too_many_turns: {len(messages):,} > {MAX_TURNS:,}"
    for m in messages:
        content = m.get("content") if type(m) is dict else None
        if type(content) is str and len(content) > MAX_CONTENT_CHARS:
            return f"too_long: content of {len(content):,} characters > {MAX_CONTENT_CHARS:,}"
    return None


def text_problem(text) -> str | None:
    if type(text) is str and len(text) > MAX_TEXT_CHARS:
        return f"too_long: text of {len(text):,} characters > {MAX_TEXT_CHARS:,}"
    return None
