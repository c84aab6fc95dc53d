"""Vectorised ingest of one JSONL block, for the big conversational formats (ShareGPT, OpenAI `messages`).

The record-by-record path costs about 15 us per conversation in Python; this one parses the block with pyarrow's
JSON reader and converts, validates and hashes whole columns with polars, at a few us per conversation. It gives
the same rows: the same role mapping, the checks of `schemas/conversation.schema.json` and the turn order of
`schemas.validate.turn_order_problem` as column expressions, the same canonical JSON for the id (`tests/test_ingest`
compares both paths). Anything it is not sure of goes back to the record-by-record path, which names the reason:
a block that does not parse as uniform JSON (returns None), and rows that fail a check (converted one by one).
So does a block that is not valid UTF-8 (pyarrow would copy the bytes into its strings), that has a line with more
opening brackets than `MAX_DEPTH` (pyarrow's parser crashes the process past some 10,000 levels) or that is larger
than `MAX_RECORD_BYTES`: cheap checks of the whole block, in C.
"""

from __future__ import annotations

import hashlib
import io
from typing import Callable

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.json as pj

from connectors import openai_messages, sharegpt
from connectors.detect import by_name
from connectors.json_text import line_record, may_nest_deeper
from schemas.limits import MAX_RECORD_BYTES
from schemas.validate import conversation_limits

ROLE_LETTERS = {"system": "s", "user": "u", "assistant": "a", "tool": "t"}
TURN_ORDER = r"^s?(?:ua(?:t+a)*)+$"  # turn_order_problem as a regex over one letter per role
NOT_SPACE = r"[^\s\x1c-\x1f]"  # Python's str.isspace also counts \x1c-\x1f as space


def _messages_from(column: str, speaker: str, text: str, roles: dict) -> Callable[[pl.DataFrame], pl.Expr | None]:
    plain_roles = {k: v for k, v in roles.items() if k != "function_call"}

    def convert(frame: pl.DataFrame) -> pl.Expr | None:
        dtype = frame.schema.get(column)
        if not isinstance(dtype, pl.List) or not isinstance(dtype.inner, pl.Struct):
            return None
        fields = {f.name: f.dtype for f in dtype.inner.fields}
        if fields.get(speaker) != pl.String or fields.get(text) != pl.String or "tool_calls" in fields:
            return None
        turn = pl.element().struct
        role = turn.field(speaker).replace_strict(plain_roles, default=None, return_dtype=pl.String)
        # a turn with a tool call has no role here, so its record fails `_valid` and takes the record-by-record
        # path, which checks the call and rewrites it
        role = pl.when(turn.field(text).str.contains("<tool_call>", literal=True)).then(None).otherwise(role)
        return pl.col(column).list.eval(pl.struct(role.alias("role"), turn.field(text).alias("content")))
    return convert


CONVERTERS = {
    sharegpt.NAME: ("conversations", _messages_from("conversations", "from", "value", sharegpt.ROLES)),
    openai_messages.NAME: ("messages", _messages_from("messages", "role", "content", openai_messages.ROLES)),
}


def _valid(messages: pl.Expr) -> pl.Expr:
    _, min_items, max_items, min_len, max_len = conversation_limits()
    turn = pl.element().struct
    content_ok = messages.list.eval(
        turn.field("content").str.len_chars().is_between(min_len, max_len)
        & turn.field("content").str.contains(NOT_SPACE)
        & turn.field("role").is_not_null()).list.all()
    letters = messages.list.eval(turn.field("role").replace_strict(ROLE_LETTERS, default="?")).list.join("")
    return (messages.is_not_null() & messages.list.len().is_between(min_items, max_items) & content_ok
            & letters.str.contains(TURN_ORDER)).fill_null(False)


def fast_frame(fmt_name: str, kind: str, source: str, name: str, chunk, schema: pa.Schema,
               slow) -> pl.DataFrame | None:
    """The rows of one `jsonl_chunks` block with the columns of `schema`, or None to take the record-by-record path.

    `slow(raws)` turns records into rows that way; it is used for the rows that fail a check here.
    """
    number, block, damage = chunk
    if kind != "conversation" or fmt_name not in CONVERTERS or damage or not block.strip():
        return None
    if len(block) > MAX_RECORD_BYTES or not _utf8(block) or may_nest_deeper(block):
        return None
    body = block[:-1] if block.endswith(b"\n") else block
    try:
        # 1 MB blocks, parsed on all cores (a block must hold whole lines: pyarrow cuts at newlines)
        table = pj.read_json(io.BytesIO(body), read_options=pj.ReadOptions(use_threads=True, block_size=1 << 20))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if "tools" in table.column_names:
        return None  # tool definitions are read (and checked) record by record
    lines = body.count(b"\n") + 1  # a blank line makes the reader's row count differ: the slow path takes it
    column, convert = CONVERTERS[fmt_name]
    frame = pl.from_arrow(table)
    messages = convert(frame) if table.num_rows == lines else None
    if messages is None:
        return None
    others = [c for c in frame.columns if c != column]
    frame = frame.with_columns(
        messages.alias("_messages"),
        pl.int_range(number, number + lines).alias("_line"),
    ).with_columns(_valid(pl.col("_messages")).alias("_ok"))
    good = frame.filter("_ok").with_columns(
        pl.concat_str(pl.lit(f"{name}:"), pl.col("_line").cast(pl.String)).alias("locator"))
    good = good.select(
        pl.concat_str(pl.lit("["), pl.col("_messages").list.eval(pl.element().struct.json_encode()).list.join(","),
                      pl.lit("]")).alias("_canonical"),
        pl.col("_messages").alias("messages"),
        pl.lit(source).alias("source"),
        pl.struct(*others, "locator").struct.json_encode().alias("meta"),
        "_line",
    )
    ids = _sha256_each(good["_canonical"])
    good = good.with_columns(pl.Series("id", ids, dtype=pl.String)).drop("_canonical")
    polars_schema = pl.from_arrow(schema.empty_table()).schema
    good = good.with_columns(*(pl.lit(None, dtype=polars_schema[c]).alias(c) for c in schema.names
                               if c not in good.columns))
    good = good.select(*(pl.col(c).cast(polars_schema[c]) for c in schema.names), "_line")
    bad_lines = frame.filter(~pl.col("_ok"))["_line"].to_list()
    if not bad_lines:
        return good.drop("_line")
    split = body.split(b"\n")
    fmt = by_name(fmt_name)
    rows = [dict(row, _line=n) for n in bad_lines  # shallow: the block passed `may_nest_deeper` above
            for row in slow(fmt, [line_record(name, n, split[n - number], shallow=True)])]
    bad = pl.from_dicts(rows, schema={**polars_schema, "_line": pl.Int64})
    return pl.concat([good, bad]).sort("_line", maintain_order=True).drop("_line")


def _utf8(block: bytes) -> bool:
    """Whether the block is valid UTF-8, checked by Arrow in place (faster than bytes.decode on non-ASCII text)."""
    offsets = pa.py_buffer(np.array([0, len(block)], dtype=np.int64))
    try:
        pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(block)]).cast(pa.large_string())
        return True
    except pa.ArrowInvalid:
        return False


def _sha256_each(texts: pl.Series) -> list[str]:
    """sha256 hex of every string, hashed straight from the Arrow buffers (no Python str per row)."""
    array = texts.rechunk().to_arrow().cast(pa.large_string())  # one chunk: one offsets and one data buffer
    bounds = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset:array.offset + len(array) + 1].tolist()
    data = memoryview(array.buffers()[2])
    sha256 = hashlib.sha256
    return [sha256(data[a:b]).hexdigest() for a, b in zip(bounds, bounds[1:])]
