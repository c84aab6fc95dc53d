"""Containers: find the files a source names and stream their records, each with a locator.

`read_records(path)` yields `Raw(locator, record, raw, error)` one record at a time: `record` is a dict, or None
with `error` saying why the bytes at `locator` are not a usable record (`raw` keeps them). Locators are
`file.jsonl:17` (1-based line) for text files and `file.parquet[17]` (0-based row) for columnar ones.

- JSONL / NDJSON (and `.json` files that do not start with `[`), streamed in blocks, so memory does not grow
  with the file (`jsonl_chunks` hands out whole-line blocks for column-wise parsing); JSON arrays are decoded element
  by element from the text, which is held whole.
- CSV (header row; cells that hold a JSON list or object are decoded), Parquet (row group by row group), Arrow
  IPC files and streams, and `datasets` directories written by `save_to_disk` (every split).
- `.gz`, `.bz2` and `.zst` around any of the text formats.

A file that cannot be opened at all is a `SourceError` naming it. Damage found after the first record (a truncated
gzip, an unreadable row group) becomes one bad record at the place it was found, and what came before is kept.
"""

from __future__ import annotations

import bz2
import csv
import glob
import io
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from isal import isal_zlib  # zlib's API, about 4x faster at gzip

from pipelines.errors import SourceError

DECOMPRESSORS = {".gz": lambda: isal_zlib.decompressobj(wbits=31), ".bz2": bz2.BZ2Decompressor,
                 ".zst": lambda: zstandard.ZstdDecompressor().decompressobj()}
COMPRESSIONS = set(DECOMPRESSORS)
TEXT_SUFFIXES = {".jsonl", ".ndjson", ".json", ".csv", ".txt", ".md"}
SUFFIXES = TEXT_SUFFIXES | {".parquet", ".arrow", ".feather", ".ipc"}
STREAM_ERRORS = (EOFError, OSError, zlib.error, isal_zlib.error, zstandard.ZstdError)
SURROGATE = re.compile(r"[\udc80-\udcff]")
csv.field_size_limit(1 << 30)


@dataclass(slots=True)
class Raw:
    locator: str
    record: dict | None
    raw: Any = None  # the original bytes or text, or the row as read (a dict)
    error: str | None = None

    def raw_text(self) -> str:
        """The original record as text, for the quarantine."""
        raw = self.raw if self.raw is not None else self.record
        if isinstance(raw, bytes):
            return raw.decode("utf-8", "replace").rstrip("\n")
        if isinstance(raw, str):
            return raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace").rstrip("\n")
        return json.dumps(raw, ensure_ascii=False, default=str)


def expand(spec: str | Path) -> list[Path]:
    """A path, a directory (every data file under it) or a glob -> files, sorted; SourceError if none.

    A `datasets` directory (from `save_to_disk`) counts as one source wherever it is met.
    """
    spec = str(spec)
    if any(ch in spec for ch in "*?["):
        paths = [Path(p) for p in sorted(glob.glob(spec, recursive=True))]
        paths = [p for p in paths if is_datasets_dir(p) or (p.is_file() and data_suffix(p) in SUFFIXES)]
    elif Path(spec).is_dir() and not is_datasets_dir(Path(spec)):
        paths = sorted(_walk(Path(spec)))
    elif Path(spec).exists():
        paths = [Path(spec)]
    else:
        raise SourceError(f"source not found: {spec}; check the path in --set sources=...")
    if not paths:
        raise SourceError(f"no data files match {spec} (looked for {', '.join(sorted(SUFFIXES))} and compressed "
                          f"versions of them)")
    return paths


def _walk(root: Path) -> Iterator[Path]:
    for path in root.iterdir():
        if is_datasets_dir(path):
            yield path
        elif path.is_dir():
            yield from _walk(path)
        elif data_suffix(path) in SUFFIXES:
            yield path


def is_datasets_dir(path: Path) -> bool:
    return path.is_dir() and any((path / n).exists() for n in ("state.json", "dataset_dict.json"))


def data_suffix(path: Path) -> str:
    """`a.jsonl.gz` -> `.jsonl`."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def read_records(path: Path) -> Iterator[Raw]:
    if is_datasets_dir(path):
        yield from _read_datasets_dir(path)
        return
    suffix = data_suffix(path)
    if suffix == ".parquet":
        yield from _read_parquet(path)
    elif suffix in (".arrow", ".feather", ".ipc"):
        yield from _read_arrow(path, path.name)
    elif suffix == ".csv":
        yield from _guard(path, _read_csv)
    elif suffix in (".txt", ".md"):
        yield from _guard(path, _read_text)
    elif is_jsonl(path):
        for chunk in jsonl_chunks(path, 1 << 20):
            yield from lines_to_records(path.name, chunk)
    else:
        yield from _read_json_array(path)


def blocks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    """The file's bytes, decompressed, in blocks. Everything that can be decoded comes out before an error is raised
    (EOFError for a stream that ends early, zlib.error and friends for corrupt data), so damage loses nothing
    before it. Concatenated gzip, bz2 and zstd members are read one after another."""
    make = DECOMPRESSORS.get(path.suffix.lower())
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise SourceError(f"cannot open {path}: {exc}") from None
    with raw:
        if make is None:
            while data := raw.read(size):
                yield data
            return
        decoder, started = make(), False
        while data := raw.read(size):
            while data:
                out = decoder.decompress(data)
                started = True
                for start in range(0, len(out), size):  # keep blocks near `size` however well it compressed
                    yield out[start:start + size]
                if decoder.eof:
                    data, decoder, started = decoder.unused_data, make(), False
                else:
                    data = b""
        if started:
            raise EOFError("the compressed stream ends before its end marker (truncated file?)")


class _BlockReader(io.RawIOBase):
    """A readable stream over `blocks()`, for readers that want a file object (CSV)."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks, self.pending = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.pending:
            self.pending = next(self.chunks, b"")
            if not self.pending:
                return 0
        n = min(len(buffer), len(self.pending))
        buffer[:n], self.pending = self.pending[:n], self.pending[n:]
        return n


def _open(path: Path) -> io.BufferedReader:
    return io.BufferedReader(_BlockReader(blocks(path)))


def _guard(path: Path, reader) -> Iterator[Raw]:
    """Run a streaming reader; damage before the first record is a SourceError, after it one bad record."""
    count, last = 0, f"{path.name}:1"
    try:
        with _open(path) as stream:
            for item in reader(path, stream):
                count, last = count + 1, item.locator
                yield item
    except STREAM_ERRORS as exc:
        if count == 0:
            raise SourceError(f"cannot read {path}: {exc}") from None
        yield Raw(f"{last}+", None, b"", f"unreadable: file damaged after this record ({exc})")


def parse_json_line(line: bytes) -> tuple[Any, str | None]:
    """(value, None) or (None, reason) for one line of JSONL."""
    try:
        return orjson.loads(line), None
    except orjson.JSONDecodeError:
        pass
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"undecodable: invalid UTF-8 at byte {exc.start}"
    try:
        value = json.loads(text)  # accepts NaN and Infinity, which orjson refuses
    except json.JSONDecodeError as exc:
        return None, f"not_json: {exc.msg} at column {exc.colno}"
    return (value, None) if storable(value) else (None, "undecodable: a \\u escape makes a lone surrogate")


def storable(value) -> bool:
    """False for text that cannot be stored as UTF-8 (lone surrogates from \\ud800-style escapes)."""
    try:
        orjson.dumps(value)
        return True
    except TypeError:
        return False


def line_record(name: str, number: int, line: bytes) -> Raw:
    value, error = parse_json_line(line)
    if error is None and type(value) is not dict:
        error = f"not_object: a JSON {type(value).__name__}, not an object"
    return Raw(f"{name}:{number}", value if error is None else None, line, error)


def is_jsonl(path: Path) -> bool:
    suffix = data_suffix(path)
    if suffix in (".jsonl", ".ndjson"):
        return True
    if suffix != ".json" or is_datasets_dir(path):
        return False
    head = b""
    try:
        for data in blocks(path, 4096):
            head += data
            if head.strip():
                break
    except STREAM_ERRORS:
        pass  # the reader meets the damage again and reports it
    return not head.lstrip().startswith(b"[")


def jsonl_chunks(path: Path, size: int = 8 << 20) -> Iterator[tuple[int, bytes, str | None]]:
    """A JSONL file as blocks of whole lines of about `size` bytes: `(number of the first line, block, damage)`.

    Cheap to cut (no per-line work); a block is parsed whole (`lines_to_records`, or pyarrow). `damage` is
    None, or, on the last block, why the file ends early (a truncated gzip); damage before any data is a SourceError.
    """
    number, carry = 1, b""
    try:
        for data in blocks(path, size):
            data = carry + data
            cut = data.rfind(b"\n") + 1
            block, carry = (data[:cut], data[cut:]) if cut else (b"", data)
            if block:
                yield number, block, None
                number += block.count(b"\n")
    except STREAM_ERRORS as exc:
        if number == 1 and not carry:
            raise SourceError(f"cannot read {path}: {exc}") from None
        yield number, carry, f"unreadable: the file is damaged after line {number - 1} ({exc})"
        return
    if carry:
        yield number, carry, None


def lines_to_records(name: str, chunk: tuple[int, bytes, str | None]) -> Iterator[Raw]:
    """The records of one `jsonl_chunks` block; a damaged end of file is one bad record after the last line."""
    number, block, damage = chunk
    lines = block.split(b"\n")
    if damage:  # the last piece is a partial line cut off by the damage
        lines, partial = lines[:-1], lines[-1]
    for n, line in enumerate(lines, number):
        if line.strip():
            yield line_record(name, n, line)
    if damage:
        yield Raw(f"{name}:{number + len(lines)}", None, partial, damage)


def _read_json_array(path: Path) -> Iterator[Raw]:
    data, damage = b"", None
    try:
        for block in blocks(path):
            data += block
    except STREAM_ERRORS as exc:
        if not data:
            raise SourceError(f"cannot read {path}: {exc}") from None
        damage = f"unreadable: the file is damaged ({exc})"
    for raw in _json_elements(path, data.decode("utf-8", "surrogateescape")):
        if damage and raw.error and raw.error.startswith("not_json"):
            raw.error = damage
        yield raw


def _json_elements(path: Path, text: str) -> Iterator[Raw]:
    decoder = json.JSONDecoder()
    ws = re.compile(r"\s*")
    pos = ws.match(text, text.index("[") + 1).end()
    line, counted = 1 + text.count("\n", 0, pos), pos
    while pos < len(text) and text[pos] != "]":
        line += text.count("\n", counted, pos)
        counted = pos
        locator = f"{path.name}:{line}"
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield Raw(locator, None, text[pos:pos + 2000], f"not_json: {exc.msg}; the rest of the array is unreadable")
            return
        raw = text[pos:end]
        if SURROGATE.search(raw) or not storable(value):
            yield Raw(locator, None, raw, "undecodable: invalid UTF-8 in this element")
        elif type(value) is not dict:
            yield Raw(locator, None, raw, f"not_object: a JSON {type(value).__name__}, not an object")
        else:
            yield Raw(locator, value, raw)
        pos = ws.match(text, end).end()
        if pos < len(text) and text[pos] == ",":
            pos = ws.match(text, pos + 1).end()
        elif pos < len(text) and text[pos] != "]":
            yield Raw(locator, None, text[pos:pos + 200], "not_json: expected ',' or ']' after this element")
            return
    if pos >= len(text):
        yield Raw(f"{path.name}:{line}", None, text[-200:], "not_json: the array is not closed (truncated file?)")


def _maybe_json(cell: str | None) -> Any:
    if cell and cell[0] in "[{":
        try:
            return json.loads(cell)
        except json.JSONDecodeError:
            return cell
    return cell


def _read_csv(path: Path, stream) -> Iterator[Raw]:
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    reader = csv.reader(text)
    header = next(reader, None)
    if header is None:
        return
    start = reader.line_num + 1
    for cells in reader:
        locator, raw = f"{path.name}:{start}", ",".join(cells)
        start = reader.line_num + 1
        if not any(cells):
            continue
        if SURROGATE.search(raw):
            yield Raw(locator, None, raw, "undecodable: invalid UTF-8 in this row")
        elif len(cells) != len(header):
            yield Raw(locator, None, raw, f"bad_row: {len(cells)} fields where the header has {len(header)}")
        else:
            yield Raw(locator, {k: _maybe_json(v) for k, v in zip(header, cells)}, raw)


def _read_text(path: Path, stream) -> Iterator[Raw]:
    data = stream.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        yield Raw(f"{path.name}:1", None, data[:2000], f"undecodable: invalid UTF-8 at byte {exc.start}")
        return
    yield Raw(f"{path.name}:1", {"text": text}, None)


def _rows(table_batches, label: str, index: int = 0) -> Iterator[Raw]:
    for batch in table_batches:
        for row in batch.to_pylist():
            yield Raw(f"{label}[{index}]", row)
            index += 1


def _read_parquet(path: Path) -> Iterator[Raw]:
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"cannot read {path} as Parquet: {exc}") from None
    start = 0
    for group in range(parquet.num_row_groups):
        size = parquet.metadata.row_group(group).num_rows
        try:
            batches = parquet.read_row_group(group).to_batches(max_chunksize=4096)
        except (OSError, pa.ArrowException) as exc:
            yield Raw(f"{path.name}[{start}:{start + size}]", None, "", f"unreadable: row group {group}: {exc}")
        else:
            yield from _rows(batches, path.name, start)
        start += size


def _read_arrow(path: Path, label: str) -> Iterator[Raw]:
    try:
        source = pa.memory_map(str(path))
        try:
            reader = pa.ipc.open_file(source)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        except pa.ArrowInvalid:
            source.seek(0)
            batches = pa.ipc.open_stream(source)
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"cannot read {path} as Arrow IPC: {exc}") from None
    yield from _rows(batches, label)


def _read_datasets_dir(path: Path) -> Iterator[Raw]:
    if (path / "dataset_dict.json").exists():
        splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
        for split in splits:
            yield from _read_datasets_dir(path / split)
        return
    state = json.loads((path / "state.json").read_text())
    for entry in state.get("_data_files", []):
        yield from _read_arrow(path / entry["filename"], f"{path.name}/{entry['filename']}")
