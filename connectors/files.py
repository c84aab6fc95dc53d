"""Containers: stream the records of one file (or `datasets` directory) found by `walk.expand`, each with a locator.

`read_records(path)` yields `Raw(locator, record, raw, error)` one record at a time: `record` is a dict, or None
with `error` saying why the bytes at `locator` are not a usable record (`raw` keeps them). Locators are
`file.jsonl:17` (1-based line) for text files and `file.parquet[17]` (0-based row) for columnar ones; an element of a
JSON array that starts on the same line as the one before it (a minified array) is `file.json[5]` (0-based element).

- JSONL / NDJSON and JSON arrays: `json_text`.
- Here: CSV (header row; cells that hold a JSON list or object are decoded), `.txt` / `.md` (the file is one record),
  Parquet (row group by row group), Arrow IPC files and streams, and `datasets` directories written by `save_to_disk`
  (every split).
- `.gz`, `.bz2` and `.zst` around any of the text formats: `streams.blocks`.

A file that cannot be opened at all is a `SourceError` naming it (so is one in UTF-16 or UTF-32: ingest reads UTF-8;
a UTF-8 byte order mark is skipped; and a `.gz`, `.bz2` or `.zst` that is not in that format). Damage found inside
a file (a truncated or corrupt gzip, bz2 or zstd stream, even before its first record; an unreadable row group)
becomes one bad record at the place it was found, what came before is kept, and the run goes on.

Hostile input is bounded by `schemas.limits`: a record nested deeper than `MAX_DEPTH` (`too_deep`), larger than
`MAX_RECORD_BYTES` (`too_large`), or holding text that is not valid UTF-8 (`undecodable`, in every container, Parquet
and Arrow included) is one bad record; the rest of the file is read.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from connectors.errors import SourceError
from connectors.json_text import deeper_than_limit, is_jsonl, jsonl_chunks, lines_to_records, read_json_array, storable
from connectors.streams import STREAM_ERRORS, SURROGATE, Raw, check_encoding, open_blocks
from connectors.walk import COLUMNAR, data_suffix, is_datasets_dir
from schemas.limits import MAX_RAW_BYTES, MAX_RECORD_BYTES, too_deep, too_large

csv.field_size_limit(1 << 30)


def read_records(path: Path) -> Iterator[Raw]:
    """The records of one entry of `expand` (a file or a `datasets` directory), read by its container."""
    if is_datasets_dir(path):
        yield from _read_datasets_dir(path)
        return
    suffix = data_suffix(path)
    if suffix == ".parquet":
        yield from _read_parquet(path)
    elif suffix in COLUMNAR:
        yield from _read_arrow(path, path.name)
    elif suffix == ".csv":
        yield from _guard(path, _read_csv)
    elif suffix in (".txt", ".md"):
        yield from _guard(path, _read_text)
    elif is_jsonl(path):
        for chunk in jsonl_chunks(path, 1 << 20):
            yield from lines_to_records(path.name, chunk)
    else:
        yield from read_json_array(path)


def _guard(path: Path, reader) -> Iterator[Raw]:
    """Run a streaming reader; damage becomes one bad record where it was met (after the last good record)."""
    check_encoding(path)
    count, last = 0, f"{path.name}:1"
    try:
        with open_blocks(path) as stream:
            for item in reader(path, stream):
                count, last = count + 1, item.locator
                yield item
    except (*STREAM_ERRORS, csv.Error) as exc:
        if count == 0:
            yield Raw(last, None, b"", f"unreadable: the file is damaged before its first record ({exc})")
        else:
            yield Raw(f"{last}+", None, b"", f"unreadable: file damaged after this record ({exc})")


def _maybe_json(cell: str | None) -> Any:
    if cell and cell[0] in "[{":
        try:
            return json.loads(cell)
        except ValueError:  # not JSON (or an integer of 4,300+ digits): the text as it is
            return cell
    return cell


def _read_csv(path: Path, stream) -> Iterator[Raw]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(text)
    header = next(reader, None)
    if header is None:
        return
    # a column name that is not UTF-8 gets U+FFFD, so it can be stored (in `meta`) like any other
    header = [h.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for h in header]
    start = reader.line_num + 1
    for cells in reader:
        locator, raw = f"{path.name}:{start}", ",".join(cells)
        start = reader.line_num + 1
        if not any(cells):
            continue
        if SURROGATE.search(raw):
            yield Raw(locator, None, raw, "undecodable: invalid UTF-8 in this row")
        elif len(raw) > MAX_RECORD_BYTES // 4 and (n := len(raw.encode("utf-8", "surrogatepass"))) > MAX_RECORD_BYTES:
            yield Raw(locator, None, raw, too_large(n))
        elif len(cells) != len(header):
            yield Raw(locator, None, raw, f"bad_row: {len(cells)} fields where the header has {len(header)}")
        elif any(cell[:1] in ("[", "{") and deeper_than_limit(cell) for cell in cells):
            yield Raw(locator, None, raw, too_deep())
        else:
            record = {k: _maybe_json(v) for k, v in zip(header, cells)}
            if all(type(v) is str or storable(v) for v in record.values()):
                yield Raw(locator, record, raw)
            else:
                yield Raw(locator, None, raw, "undecodable: a \\u escape makes a lone surrogate")


def _read_text(path: Path, stream) -> Iterator[Raw]:
    data = stream.read(MAX_RECORD_BYTES + 1)
    if len(data) > MAX_RECORD_BYTES:  # not held whole: counted to its end
        total = len(data) + sum(map(len, iter(lambda: stream.read(1 << 20), b"")))
        yield Raw(f"{path.name}:1", None, data[:MAX_RAW_BYTES + 1], too_large(total))
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        yield Raw(f"{path.name}:1", None, data[:2000], f"undecodable: invalid UTF-8 at byte {exc.start}")
        return
    yield Raw(f"{path.name}:1", {"text": text}, None)


def _rows(table_batches, label: str, index: int = 0) -> Iterator[Raw]:
    for batch in table_batches:
        try:
            batch.validate(full=True)  # a damaged file can point outside its buffers: reading that could crash
            rows = batch.to_pylist()
        except (ValueError, OverflowError, pa.ArrowException):  # that, invalid UTF-8, a date Python cannot hold
            rows = None
        if rows is not None:
            for row in rows:
                yield Raw(f"{label}[{index}]", row)
                index += 1
            continue
        for i in range(batch.num_rows):  # one at a time, to find the rows that cannot be read
            yield _row(batch.slice(i, 1), f"{label}[{index}]")
            index += 1


def _row(one: pa.RecordBatch, locator: str) -> Raw:
    """A one-row batch as a record, or as a bad record with what of it can be read safely."""
    try:
        one.validate(full=True)
        return Raw(locator, one.to_pylist()[0])
    except (ValueError, OverflowError, pa.ArrowException) as exc:
        utf8 = isinstance(exc, UnicodeDecodeError) or "UTF8" in str(exc)
        reason = "undecodable: invalid UTF-8 in this row" if utf8 else f"unreadable: {type(exc).__name__}: {exc}"
    raw = {}
    for name, column in zip(one.schema.names, one.columns):
        try:
            column.validate(full=True)
            raw[name] = column.to_pylist()[0]
        except (ValueError, OverflowError, pa.ArrowException) as exc:
            raw[name] = f"<{column.type} that cannot be read>"
            if "UTF8" in str(exc) and pa.types.is_string(column.type):  # its bytes, then
                raw[name] = column.cast(pa.binary()).to_pylist()[0]
    return Raw(locator, None, raw, reason)


def _read_parquet(path: Path) -> Iterator[Raw]:
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, ValueError, pa.ArrowException) as exc:  # ValueError: a column name that is not UTF-8
        raise SourceError(f"cannot read {path} as Parquet: {exc}") from None
    start = 0
    for group in range(parquet.num_row_groups):
        n_rows = parquet.metadata.row_group(group).num_rows
        try:
            batches = parquet.read_row_group(group).to_batches(max_chunksize=4096)
        except (OSError, ValueError, pa.ArrowException) as exc:
            yield Raw(f"{path.name}[{start}:{start + n_rows}]", None, "", f"unreadable: row group {group}: {exc}")
        else:
            yield from _rows(batches, path.name, start)
        start += n_rows


def _read_arrow(path: Path, label: str) -> Iterator[Raw]:
    try:
        source = pa.memory_map(str(path))
        try:
            reader = pa.ipc.open_file(source)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        except pa.ArrowInvalid:
            source.seek(0)
            batches = pa.ipc.open_stream(source)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise SourceError(f"cannot read {path} as Arrow IPC: {exc}") from None
    count = 0
    try:
        for raw in _rows(batches, label):
            count += 1
            yield raw
    except (OSError, ValueError, pa.ArrowException) as exc:  # a damaged batch: what came before is kept
        if count == 0:
            raise SourceError(f"cannot read {path} as Arrow IPC: {exc}") from None
        yield Raw(f"{label}[{count}]", None, "", f"unreadable: the file is damaged after this row ({exc})")


def _read_datasets_dir(path: Path) -> Iterator[Raw]:
    try:
        if (path / "dataset_dict.json").exists():
            splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
        else:
            state = json.loads((path / "state.json").read_text())
            splits, files = None, [entry["filename"] for entry in state.get("_data_files", [])]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"cannot read the datasets directory {path}: {type(exc).__name__}: {exc}") from None
    if splits is not None:
        for split in splits:
            yield from _read_datasets_dir(path / split)
        return
    for name in files:
        yield from _read_arrow(path / name, f"{path.name}/{name}")
