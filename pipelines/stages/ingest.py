"""Ingest: source files -> canonical rows of one kind, every record validated, bad ones quarantined.

`kind` picks the output schema (`schemas/`): "conversation" (SFT), "preference" (DPO pairs) or "text" (materials).
Preference sources feed SFT as their chosen conversation; a conversation source cannot give preference pairs, and
that is a SourceError naming the file.

Each record is read from its file (`connectors.files`), converted by its format (`connectors.detect`), given its id
and checked against the size limits of `schemas.limits` (`too_many_turns`, `too_long`: named here, as the JSON Schema's
message would quote the whole value) and the JSON Schema. A record that fails anywhere becomes a dropped row whose
`drop_reason` says why, with `locator` and `raw` (its first 64 KiB); the runner keeps those in the quarantine. Kept
rows carry their locator in `meta`.

JSONL in a record-wise format is read in blocks of about 4 MB; ShareGPT and OpenAI-messages blocks are converted
column-wise by pyarrow and polars on all cores (`ingest_fast`), the rest record by record. Both ways give the same
rows in file order, so a resumed run re-cuts the same parts.
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Iterator

import numpy as np
import orjson
import polars as pl
import pyarrow as pa

from connectors.base import RecordError, convert_each
from connectors.detect import by_name, detect, kinds
from connectors.files import read_records
from connectors.json_text import is_jsonl, jsonl_chunks, lines_to_records
from connectors.sources import SourceSpec
from connectors.streams import Raw
from connectors.walk import expand
from pipelines.core.errors import ConfigError, SourceError
from pipelines.core.stage import DROP, Context, Source
from pipelines.stages.ingest_fast import fast_frame
from pipelines.stages.redact import Redact
from schemas import (CONVERSATION, MESSAGE, PREFERENCE, TEXT, check_conversation, check_preference, check_text,
                     conversation_id, preference_id, prompt_id, text_id)
from schemas.limits import messages_problem, text_problem

KINDS = {"conversation": CONVERSATION, "preference": PREFERENCE, "text": TEXT}
BLOCK_BYTES = 4 << 20  # JSONL converted at once
QUARANTINE_COLUMNS = {"locator": pa.string(), "raw": pa.string(), DROP: pa.string()}
# beside a kind's schema: the tools a conversation offered (OpenAI function definitions as a JSON string; null when
# none), from the formats that carry them (OpenAI messages, ShareGPT/Hermes, Glaive, xLAM)
EXTRA_COLUMNS = {"conversation": [pa.field("tools", pa.string())], "preference": [], "text": []}


def _json(value: dict) -> str:
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:  # orjson writes at most 254 levels; records may nest up to MAX_DEPTH
        return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


@dataclass
class Ingest(Source):
    sources: tuple[str, ...] = ()
    kind: str = "conversation"
    redact: str = "none"  # `Redact`'s scope, applied before a batch is written: no input secret reaches the run dir
    batch_rows: int = 20_000
    name = "ingest"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"ingest kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        if not self.sources:
            raise ConfigError("no sources given; name files with --set sources=PATH[,PATH...]")
        self.specs = [SourceSpec.parse(s) for s in self.sources]
        self._redactor = Redact(scope=self.redact)
        self.provides = (*KINDS[self.kind].names, *(f.name for f in EXTRA_COLUMNS[self.kind]))

    def settings(self) -> dict:
        # The files' sizes and times are part of the fingerprint: a changed input is read again.
        return {"sources": self.sources, "kind": self.kind, "redact": self.redact,
                "files": [spec.files_identity() for spec in self.specs]}

    def read(self, ctx: Context) -> Iterator[pl.DataFrame]:
        yielded = False
        for spec in self.specs:
            remaining = spec.max_rows
            for path in expand(spec.path):
                for frame in self._frames(spec, path):
                    frame, remaining = _sample(frame, spec, remaining, ctx)  # by the ids of the text as read
                    if frame.height:
                        yielded = True
                        yield self._redactor.process(frame, ctx)
                    if remaining == 0:
                        break
                if remaining == 0:
                    break
        if not yielded:
            yield _Batch(self.kind).frame()

    def _frames(self, spec: SourceSpec, path: Path) -> Iterator[pl.DataFrame]:
        raws = read_records(path)
        fmt, raws = (by_name(spec.format), raws) if spec.format else detect(raws, path)
        if fmt is not None:
            offered = kinds(fmt)
            if self.kind not in offered and not (self.kind == "conversation" and "preference" in offered):
                raise SourceError(f"{path} is {fmt.NAME} data ({', '.join(offered)}); this recipe needs {self.kind} "
                                  f"records")
        source = f"{fmt.NAME if fmt else 'unknown'}:{path.name}"
        if fmt is not None and not hasattr(fmt, "convert_all") and is_jsonl(path):
            del raws  # the detection read-ahead: the file is read again block by block
            for block in jsonl_chunks(path, BLOCK_BYTES):
                yield _convert_block(fmt, self.kind, source, path.name, block)
            return
        batch = _Batch(self.kind)
        for row in convert_rows(fmt, self.kind, source, raws):
            batch.add(row)
            if len(batch) >= self.batch_rows:
                yield batch.frame()
        if len(batch):
            yield batch.frame()


def _convert_block(fmt: ModuleType, kind: str, source: str, name: str, chunk) -> pl.DataFrame:
    """One `jsonl_chunks` block of JSONL, vectorised (`ingest_fast`) where it can be, else record by record."""
    batch = _Batch(kind)
    slow = lambda fmt, raws: convert_rows(fmt, kind, source, raws)  # noqa: E731
    fast = fast_frame(fmt.NAME, kind, source, name, chunk, batch.schema, slow)
    if fast is not None:
        return fast
    collecting = gc.isenabled()
    gc.disable()  # many small dicts and no cycles: the collector would cost a quarter of the time
    try:
        for row in convert_rows(fmt, kind, source, lines_to_records(name, chunk)):
            batch.add(row)
        return batch.frame()
    finally:
        if collecting:
            gc.enable()


def _sample(frame: pl.DataFrame, spec: SourceSpec, remaining: int | None, ctx: Context):
    """Apply a source's weight and row cap to a frame; quarantined rows are never sampled away."""
    if spec.weight == 1 and remaining is None:
        return frame, remaining
    good = pl.col(DROP).is_null()
    if spec.weight < 1:
        drawn = pl.col("id").str.slice(0, 13).str.to_integer(base=16) < int(spec.weight * 16**13)
        before = frame.height
        frame = frame.filter(~good | drawn)
        ctx.count("not_sampled", before - frame.height)
    if remaining is not None:
        good_before = good.cast(pl.Int64).cum_sum() - good.cast(pl.Int64)
        frame = frame.filter(good_before < remaining)
        remaining -= frame.select(good.sum()).item()
    return frame, remaining


def convert_rows(fmt: ModuleType | None, kind: str, source: str, raws: Iterator[Raw]) -> Iterator[dict]:
    """Records of one file -> output rows, bad ones with `drop_reason`, `locator` and `raw`."""
    if fmt is None:  # nothing readable in the file: every record is quarantined as it is
        for raw in raws:
            yield _bad(raw, source, raw.error)
        return
    offered = kinds(fmt)
    native = kind if kind in offered else offered[0]
    converted = fmt.convert_all(raws, native) if hasattr(fmt, "convert_all") else convert_each(fmt.convert, raws)
    make = ROW_MAKERS[kind]
    for raw, items in converted:
        if isinstance(items, RecordError):
            yield _bad(raw, source, str(items))
            continue
        for n, item in enumerate(items):
            meta = item["meta"]
            meta["locator"] = raw.locator if len(items) == 1 else f"{raw.locator}#{n}"
            row = make(item, source)
            if row[DROP] is not None:
                row["locator"], row["raw"] = meta["locator"], raw.raw_text()
            yield row


def _bad(raw: Raw, source: str, reason: str | None) -> dict:
    return {"source": source, DROP: reason or "unreadable: no record", "locator": raw.locator, "raw": raw.raw_text()}


def conversation_row(item: dict, source: str) -> dict:
    if "prompt" in item:  # a preference pair read as SFT: its chosen conversation
        messages = item["prompt"] + [{"role": "assistant", "content": item["chosen"]}]
        item["meta"]["from_pair"] = "chosen"
    else:
        messages = item["messages"]
    row = {"id": conversation_id(messages), "messages": messages, "source": source, "meta": _json(item["meta"])}
    row[DROP] = messages_problem(messages) or check_conversation(row)
    row["tools"] = _json(item["tools"]) if item.get("tools") else None
    return row


def preference_row(item: dict, source: str) -> dict:
    prompt = item["prompt"]
    chosen = prompt + [{"role": "assistant", "content": item["chosen"]}]
    rejected = prompt + [{"role": "assistant", "content": item["rejected"]}]
    last_user = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
    row = {
        "id": preference_id(chosen, rejected),
        "prompt_id": prompt_id(last_user),
        "prompt": last_user, "chosen": chosen, "rejected": rejected, "messages": chosen,
        **{k: item[k] for k in ("score_chosen", "score_rejected", "chosen_model", "rejected_model", "completions")},
        "source": source, "meta": _json(item["meta"]),
    }
    row[DROP] = messages_problem(chosen) or messages_problem(rejected) or check_preference(row)
    return row


def text_row(item: dict, source: str) -> dict:
    row = {"id": text_id(item["text"]), "text": item["text"], "source": source, "meta": _json(item["meta"])}
    row[DROP] = text_problem(item["text"]) or check_text(row)
    return row


ROW_MAKERS = {"conversation": conversation_row, "preference": preference_row, "text": text_row}


class _Batch:
    """Rows collected as dicts, turned into one Arrow table (or polars frame) column by column."""

    def __init__(self, kind: str):
        self.schema = pa.schema(list(KINDS[kind]) + EXTRA_COLUMNS[kind] +
                                [pa.field(k, t) for k, t in QUARANTINE_COLUMNS.items()])
        self.rows: list[dict] = []

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, row: dict) -> None:
        self.rows.append(row)

    def table(self) -> pa.Table:
        arrays = []
        for field in self.schema:
            column = [row.get(field.name) for row in self.rows]
            if field.type == MESSAGES_TYPE:
                arrays.append(_messages_array(column))
            elif field.type == pa.string():
                arrays.append(_strings(column))
            else:
                arrays.append(pa.array(column, field.type))
        self.rows = []
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def frame(self) -> pl.DataFrame:
        return pl.from_arrow(self.table())



MESSAGES_TYPE = pa.list_(MESSAGE)


def _messages_array(conversations: list[list[dict] | None]) -> pa.Array:
    """list<{role, content}> built from flat columns: several times faster than pa.array on the dicts."""
    roles, contents, offsets, valid = [], [], [0], []
    for messages in conversations:
        if messages is not None:
            for m in messages:
                roles.append(m["role"])
                contents.append(m["content"])
        offsets.append(len(roles))
        valid.append(messages is not None)
    values = pa.StructArray.from_arrays([pa.array(roles, pa.string()), _strings(contents)],
                                        fields=list(MESSAGE))
    mask = None if all(valid) else pa.array([not v for v in valid])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, mask=mask)


def _strings(values: list[str | None]) -> pa.Array:
    """A string array built from one joined buffer: several times faster than `pa.array` on fresh str objects."""
    if None in values:
        return pa.array(values, pa.string())
    encoded = [v.encode() for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
    if offsets[-1] >= 2**31:
        return pa.array(values, pa.string())
    return pa.Array.from_buffers(pa.string(), len(encoded),
                                 [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b"".join(encoded))])
