"""Containers: find the files a source names and stream their records, each with a locator.

`read_records(path)` yields `Raw(locator, record, raw, error)` one record at a time: `record` is a dict, or None
with `error` saying why the bytes at `locator` are not a usable record (`raw` keeps them). Locators are
`file.jsonl:17` (1-based line) for text files and `file.parquet[17]` (0-based row) for columnar ones; an element of a
JSON array that starts on the same line as the one before it (a minified array) is `file.json[5]` (0-based element).

- JSONL / NDJSON (and `.json` files that do not start with `[`), streamed in blocks, so memory does not grow
  with the file (`jsonl_chunks` hands out whole-line blocks for column-wise parsing); JSON arrays are decoded element
  by element from the text, which is held whole.
- CSV (header row; cells that hold a JSON list or object are decoded), Parquet (row group by row group), Arrow
  IPC files and streams, and `datasets` directories written by `save_to_disk` (every split).
- `.gz`, `.bz2` and `.zst` around any of the text formats.

A file that cannot be opened at all is a `SourceError` naming it (so is one in UTF-16 or UTF-32: ingest reads UTF-8;
a UTF-8 byte order mark is skipped). Damage found after the first record (a truncated or corrupt gzip, bz2 or zstd
stream, an unreadable row group) becomes one bad record at the place it was found, and what came before is kept.

Hostile input is bounded by `schemas.limits`: a record nested deeper than `MAX_DEPTH` (`too_deep`), larger than
`MAX_RECORD_BYTES` (`too_large`, and a longer JSONL line is never held whole), or holding text that is not valid
UTF-8 (`undecodable`, in every container, Parquet and Arrow included) is one bad record; the rest of the file is read.
Directories are walked following symbolic links, each real directory and file once, so link cycles cannot loop.
"""

from __future__ import annotations

import bz2
import csv
import errno
import glob
import io
import json
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from isal import isal_zlib  # zlib's API, about 4x faster at gzip

from pipelines.errors import SourceError
from schemas.limits import MAX_DEPTH, MAX_RAW_BYTES, MAX_RECORD_BYTES, size, too_deep, too_large

DECOMPRESSORS = {".gz": lambda: isal_zlib.decompressobj(wbits=31), ".bz2": bz2.BZ2Decompressor,
                 ".zst": lambda: zstandard.ZstdDecompressor().decompressobj()}
COMPRESSIONS = set(DECOMPRESSORS)
TEXT_SUFFIXES = {".jsonl", ".ndjson", ".json", ".csv", ".txt", ".md"}
COLUMNAR = {".parquet", ".arrow", ".feather", ".ipc"}
SUFFIXES = TEXT_SUFFIXES | COLUMNAR
STREAM_ERRORS = (EOFError, OSError, zlib.error, isal_zlib.error, zstandard.ZstdError)
STEP = 16 << 10  # compressed bytes per decompress call: damage loses at most what this much decodes to
SURROGATE = re.compile(r"[\udc80-\udcff]")
BOM = b"\xef\xbb\xbf"
JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))
NOT_OPENING = bytes(set(range(256)) - set(b"[{\n"))
DEEP_LINE = re.compile(rb"[\[{]{%d}" % (MAX_DEPTH + 1))  # in a block with all else but newlines taken out
ELEMENT_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]', re.S)
csv.field_size_limit(1 << 30)


@dataclass(slots=True)
class Raw:
    locator: str
    record: dict | None
    raw: Any = None  # the original bytes or text, or the row as read (a dict)
    error: str | None = None

    def raw_text(self) -> str:
        """The original record as text, for the quarantine: its first MAX_RAW_BYTES, and a note if it was longer."""
        raw = self.raw if self.raw is not None else self.record
        if not isinstance(raw, (bytes, str)):
            raw = json.dumps(raw, ensure_ascii=False, default=str)
        cut = len(raw) > MAX_RAW_BYTES
        if isinstance(raw, str):  # text decoded with surrogateescape: back to its bytes
            raw = raw[:MAX_RAW_BYTES]
            try:
                raw = raw.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape
                raw = raw.encode("utf-8", "surrogatepass")
        cut = cut or len(raw) > MAX_RAW_BYTES
        note = f" [... cut: the quarantine keeps the first {size(MAX_RAW_BYTES)}]" if cut else ""
        return raw[:MAX_RAW_BYTES].decode("utf-8", "replace").rstrip("\n") + note


def expand(spec: str | Path) -> list[Path]:
    """A path, a directory (every data file under it) or a glob -> files, sorted; SourceError if none.

    A `datasets` directory (from `save_to_disk`) counts as one source wherever it is met. Each real file is listed
    once however many links lead to it, under a path without symbolic links when there is one.
    """
    spec = str(spec)
    if glob.has_magic(spec):
        paths = [path for path in _glob(spec) if is_datasets_dir(path) or _is_data_file(path)]
    elif Path(spec).is_dir() and not is_datasets_dir(Path(spec)):
        paths = list(_walk(Path(spec)))
    elif Path(spec).exists():
        paths = [Path(spec)]
    elif problem := link_problem(Path(spec)):
        raise SourceError(f"source {problem}; fix the link or name the file itself in --set sources=...")
    else:
        raise SourceError(f"source not found: {spec}; check the path in --set sources=...")
    if not paths:
        raise SourceError(f"no data files match {spec} (looked for {', '.join(sorted(SUFFIXES))} and compressed "
                          f"versions of them)")
    return _unique(paths)


def data_files(path: Path) -> list[Path]:
    """The plain files one entry of `expand` is made of: the file itself, or every file of a `datasets` directory."""
    if not path.is_dir():
        return [path]
    return sorted(p for _, entries in _directories(path) for p in entries if p.is_file())


def _walk(root: Path) -> Iterator[Path]:
    for _, entries in _directories(root, lambda d: not is_datasets_dir(d)):
        yield from (path for path in entries if is_datasets_dir(path) or _is_data_file(path))


def _is_data_file(path: Path) -> bool:
    """A regular file with a data suffix (not a pipe or a device, whose read could block for ever). A broken or looping
    symbolic link with one is a SourceError naming it, not a file silently left out."""
    if data_suffix(path) not in SUFFIXES or path.is_dir():
        return False
    if problem := link_problem(path):
        raise SourceError(f"{problem}; fix or remove it")
    return path.is_file()


def _directories(root: Path, enter=lambda directory: True) -> Iterator[tuple[Path, list[Path]]]:
    """(directory, its entries sorted) for `root` and every directory under it that `enter` accepts.

    Symbolic links are followed, but each real directory (st_dev, st_ino) is listed once: a link back up the tree
    (`ln -s . d/self`) would otherwise make the walk loop, and two of them make it exponential. Directories reached
    without a link are listed first, so their paths are the ones kept.
    """
    seen, plain, linked = set(), [root], []
    while plain or linked:
        directory = plain.pop() if plain else linked.pop()
        try:
            key = _identity(directory)
            if key in seen:
                continue
            seen.add(key)
            entries = sorted(directory.iterdir())
        except OSError as exc:
            raise SourceError(f"cannot list the directory {directory}: {exc}") from None
        yield directory, entries
        for path in reversed(entries):  # popped in name order
            if path.is_dir() and enter(path):
                (linked if path.is_symlink() else plain).append(path)


def _glob(spec: str) -> list[Path]:
    """`glob.glob(spec, recursive=True)`, except that `**` lists each real directory once (`_directories`): Python's
    follows symbolic links to directories without end."""
    parts = Path(spec).parts
    if "**" not in parts:
        return [Path(p) for p in glob.glob(spec)]
    at = parts.index("**")
    bases = [Path(p) for p in glob.glob(str(Path(*parts[:at])))] if at else [Path(".")]
    rest, out = parts[at + 1:], []
    for base in bases:
        if not base.is_dir():
            continue
        for directory, entries in _directories(base, lambda d: not d.name.startswith(".")):  # as glob: no hidden
            if rest:
                out += _glob(os.path.join(glob.escape(str(directory)), *rest))
            else:
                out += [directory] + [p for p in entries if not p.name.startswith(".")]
    return out


def _identity(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def _unique(paths: list[Path]) -> list[Path]:
    """Sorted, each real file or directory once: under a path without symbolic links if it has one, else the first."""
    chosen = {}
    for path in sorted(paths, key=lambda p: (p.resolve() != p.absolute(), p)):
        chosen.setdefault(_identity(path), path)
    return sorted(chosen.values())


def link_problem(path: Path) -> str | None:
    """Why a symbolic link leads nowhere ("x is a symbolic link that loops (x -> y -> x)", "x is a broken symbolic
    link to y"), or None when `path` is not such a link."""
    if not path.is_symlink():
        return None
    try:
        path.stat()
        return None
    except OSError as exc:
        looping = exc.errno == errno.ELOOP
    if not looping:
        return f"{path} is a broken symbolic link to {os.readlink(path)}"
    hops, current, seen = [str(path)], path, set()
    while current.is_symlink() and current not in seen and len(hops) < 10:
        seen.add(current)
        target = os.readlink(current)
        hops.append(target)
        current = Path(os.path.normpath(current.parent / target))
    return f"{path} is a symbolic link that loops ({' -> '.join(hops)})"


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
        yield from _read_json_array(path)


def blocks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    """The file's bytes, decompressed, in blocks. What can be decoded comes out before an error is raised (EOFError
    for a stream that ends early, zlib.error and friends for corrupt data): a decompress call that fails returns
    nothing, so the decoder is fed STEP bytes at a time, and damage loses at most what those decode to. Concatenated
    gzip, bz2 and zstd members are read one after another."""
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
        decoder, started, parts, have = make(), False, [], 0
        try:
            while data := raw.read(size):
                for start in range(0, len(data), STEP):
                    piece = data[start:start + STEP]
                    while piece:
                        parts.append(decoder.decompress(piece))
                        have, started = have + len(parts[-1]), True
                        if decoder.eof:
                            piece, decoder, started = decoder.unused_data, make(), False
                        else:
                            piece = b""
                    if have >= size:  # hand out blocks near `size` however well it compressed
                        out, parts = b"".join(parts), []
                        full = len(out) - len(out) % size
                        yield from (out[i:i + size] for i in range(0, full, size))
                        parts, have = [out[full:]], len(out) - full
        except STREAM_ERRORS:
            if have:
                yield b"".join(parts)
            raise
        if have:
            yield b"".join(parts)
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
    _check_encoding(path)
    count, last = 0, f"{path.name}:1"
    try:
        with _open(path) as stream:
            for item in reader(path, stream):
                count, last = count + 1, item.locator
                yield item
    except (*STREAM_ERRORS, csv.Error) as exc:
        if count == 0:
            raise SourceError(f"cannot read {path}: {exc}") from None
        yield Raw(f"{last}+", None, b"", f"unreadable: file damaged after this record ({exc})")


def _check_encoding(path: Path) -> None:
    """A SourceError for a text file in UTF-16 or UTF-32, which would otherwise be a bad record per line (every text
    reader starts with this). Told by a byte order mark, or without one by NUL bytes between the characters of
    ASCII text throughout the first 4 KiB (a file with one such line among UTF-8 ones is read, that line a bad record).
    """
    head = b""
    try:
        for data in blocks(path, 4096):
            head += data
            if len(head) >= 4096:
                break
    except STREAM_ERRORS:
        return  # the reader meets the damage again and reports it
    head = head[:4096]
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        encoding = "UTF-32"
    elif head.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "UTF-16"
    elif _mostly_nul(head[1::4] + head[2::4] + head[3::4]) and not _mostly_nul(head[0::4]):
        encoding = "UTF-32LE"
    elif _mostly_nul(head[1::2]) and not _mostly_nul(head[0::2]):
        encoding = "UTF-16LE"
    elif _mostly_nul(head[0::2]) and not _mostly_nul(head[1::2]):
        encoding = "UTF-16BE"
    else:
        return
    raise SourceError(f"{path} is {encoding} text; ingest reads UTF-8: convert it first "
                      f"(iconv -f {encoding} -t UTF-8)")


def _mostly_nul(data: bytes) -> bool:
    return len(data) >= 2 and data.count(0) >= 0.9 * len(data)


def parse_json_line(line: bytes, shallow: bool = False) -> tuple[Any, str | None]:
    """(value, None) or (None, reason) for one line of JSONL. `shallow`: the caller knows that the line has no more
    opening brackets than MAX_DEPTH (`may_nest_deeper`), so its depth need not be checked."""
    if len(line) > MAX_RECORD_BYTES:
        return None, too_large(len(line))
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        pass
    else:  # orjson allows 1024 levels
        return (None, too_deep()) if not shallow and deeper_than_limit(line) else (value, None)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"undecodable: invalid UTF-8 at byte {exc.start}"
    if not shallow and deeper_than_limit(line):  # json.loads recurses: it would raise RecursionError
        return None, too_deep()
    try:
        value = json.loads(text)  # accepts NaN and Infinity, which orjson refuses
    except json.JSONDecodeError as exc:
        return None, f"not_json: {_message(exc)} at column {exc.colno}"
    except ValueError as exc:  # an integer longer than Python converts (4,300 digits)
        return None, f"not_json: {str(exc).split(':')[0]}"
    return (value, None) if storable(value) else (None, "undecodable: a \\u escape makes a lone surrogate")


def _message(exc: json.JSONDecodeError) -> str:
    return exc.msg.removesuffix(" at")  # "Invalid control character at", then " at column N" is added


def may_nest_deeper(block: bytes) -> bool:
    """Whether a line of `block` has more opening brackets than MAX_DEPTH, so could nest deeper: a cheap bound for a
    whole block (one pass in C), which spares the lines of most blocks the exact `deeper_than_limit`."""
    return DEEP_LINE.search(block.translate(None, NOT_OPENING)) is not None


def deeper_than_limit(text: bytes | str) -> bool:
    """Whether JSON text nests `[` and `{` more than MAX_DEPTH levels deep (brackets inside strings do not count)."""
    if isinstance(text, str):
        if text.count("[") + text.count("{") <= MAX_DEPTH:  # as deep as it can be: a cheap bound first
            return False
        text = text.encode("utf-8", "surrogatepass")
    elif text.count(b"[") + text.count(b"{") <= MAX_DEPTH:
        return False
    brackets = np.frombuffer(JSON_STRING.sub(b"", text).translate(None, NOT_BRACKETS), np.uint8)
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)
    return int(np.cumsum(steps).max(initial=0)) > MAX_DEPTH


def storable(value) -> bool:
    """False for text that cannot be stored as UTF-8 (lone surrogates from \\ud800-style escapes)."""
    try:
        orjson.dumps(value)
        return True
    except TypeError:  # a lone surrogate, or more than the 254 levels orjson writes
        pass
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def line_record(name: str, number: int, line: bytes, shallow: bool = False) -> Raw:
    value, error = parse_json_line(line, shallow)
    if error is None and type(value) is not dict:
        error = f"not_object: a JSON {type(value).__name__}, not an object"
    return Raw(f"{name}:{number}", value if error is None else None, line, error)


def is_jsonl(path: Path) -> bool:
    """JSONL by its suffix, a JSON array (`.json`, or a file named with no known suffix) if it starts with `[`."""
    suffix = data_suffix(path)
    if suffix in (".jsonl", ".ndjson"):
        return True
    if (suffix in SUFFIXES and suffix != ".json") or is_datasets_dir(path):
        return False
    head = b""
    try:
        for data in blocks(path, 4096):
            head += data
            if head.removeprefix(BOM).strip():
                break
    except STREAM_ERRORS:
        pass  # the reader meets the damage again and reports it
    return not head.removeprefix(BOM).lstrip().startswith(b"[")


def jsonl_chunks(path: Path, size: int = 8 << 20) -> Iterator[tuple[int, bytes, str | None]]:
    """A JSONL file as blocks of whole lines of about `size` bytes: `(number of the first line, block, damage)`.

    Cheap to cut (no per-line work); a block is parsed whole (`lines_to_records`, or pyarrow). `damage` is None, or
    why the block's last piece is not a usable line: the file ends early (a truncated gzip), or a line longer than
    MAX_RECORD_BYTES, which is never held whole (the block is its first bytes). Damage before any data is a
    SourceError. A UTF-8 byte order mark at the start is dropped.
    """
    _check_encoding(path)
    number, carry, skipped, head = 1, b"", 0, True
    try:
        for data in blocks(path, size):
            if skipped:  # inside a line over the size limit: count it to its end, keep nothing more
                end = data.find(b"\n")
                if end < 0:
                    skipped += len(data)
                    continue
                yield number, carry, too_large(skipped + end)
                number, carry, skipped, data = number + 1, b"", 0, data[end + 1:]
            data = carry + data
            if head and (len(data) >= len(BOM) or not BOM.startswith(data)):
                head, data = False, data.removeprefix(BOM)
            cut = data.rfind(b"\n") + 1
            block, carry = (data[:cut], data[cut:]) if cut else (b"", data)
            if block:
                yield number, block, None
                number += block.count(b"\n")
            if len(carry) > MAX_RECORD_BYTES:
                skipped, carry = len(carry), carry[:MAX_RAW_BYTES + 1]
    except STREAM_ERRORS as exc:
        if number == 1 and not carry:
            raise SourceError(f"cannot read {path}: {exc}") from None
        yield number, carry, f"unreadable: the file is damaged after line {number - 1} ({exc})"
        return
    if skipped:
        yield number, carry, too_large(skipped)
    elif carry:
        yield number, carry, None


def lines_to_records(name: str, chunk: tuple[int, bytes, str | None]) -> Iterator[Raw]:
    """The records of one `jsonl_chunks` block; with `damage`, its last piece is one bad record with that reason."""
    number, block, damage = chunk
    shallow = not may_nest_deeper(block)
    lines = block.split(b"\n")
    if damage:  # the last piece is a partial line cut off by the damage, or the head of a line over the limit
        lines, partial = lines[:-1], lines[-1]
    for n, line in enumerate(lines, number):
        if line.strip():
            yield line_record(name, n, line, shallow)
    if damage:
        yield Raw(f"{name}:{number + len(lines)}", None, partial, damage)


def _read_json_array(path: Path) -> Iterator[Raw]:
    _check_encoding(path)
    parts, damage = [], None
    try:
        for block in blocks(path):
            parts.append(block)
    except STREAM_ERRORS as exc:
        if not parts:
            raise SourceError(f"cannot read {path}: {exc}") from None
        damage = f"unreadable: the file is damaged ({exc})"
    yield from _json_elements(path, b"".join(parts).removeprefix(BOM).decode("utf-8", "surrogateescape"), damage)


def _json_elements(path: Path, text: str, damage: str | None = None) -> Iterator[Raw]:
    """The elements of a JSON array, each a record or a bad record. After one that is not JSON the rest is unreadable;
    one nested too deep is skipped by its brackets. `damage`, if the file ends early, is the reason where it stops."""
    decoder = json.JSONDecoder()
    ws = re.compile(r"\s*")
    pos = ws.match(text, text.index("[") + 1).end()
    line, counted = 1 + text.count("\n", 0, pos), pos
    locator, index, previous_line = f"{path.name}:{line}", 0, None
    while pos < len(text) and text[pos] != "]":
        line += text.count("\n", counted, pos)
        counted = pos
        # `file.json:17`; an element that starts on the line of the one before (a minified array): `file.json[5]`
        locator = f"{path.name}[{index}]" if line == previous_line else f"{path.name}:{line}"
        index, previous_line = index + 1, line
        try:
            value, end = decoder.raw_decode(text, pos)
            reason = _element_problem(value, text[pos:end])
        except json.JSONDecodeError as exc:
            yield Raw(locator, None, text[pos:pos + 2000],
                      damage or f"not_json: {_message(exc)}; the rest of the array is unreadable")
            return
        except (RecursionError, ValueError) as exc:  # too deep (json recurses), or an integer of 4,300+ digits:
            # the element is skipped by its brackets, and the rest can be read
            value, end = None, _element_end(text, pos)
            reason = too_deep() if isinstance(exc, RecursionError) else f"not_json: {str(exc).split(':')[0]}"
            if end is None:
                yield Raw(locator, None, text[pos:pos + 2000], f"{reason}; the rest of the array is unreadable")
                return
        yield Raw(locator, value if reason is None else None, text[pos:end], reason)
        pos = ws.match(text, end).end()
        if pos < len(text) and text[pos] == ",":
            pos = ws.match(text, pos + 1).end()
        elif pos < len(text) and text[pos] != "]":
            yield Raw(f"{locator}+", None, text[pos:pos + 200],
                      damage or "not_json: expected ',' or ']' after this element")
            return
    if pos >= len(text):
        yield Raw(f"{locator}+" if index else locator, None, text[-200:],
                  damage or "not_json: the array is not closed (truncated file?)")
        return
    after = ws.match(text, pos + 1).end()
    if damage:  # the damage came after the array's end
        yield Raw(f"{locator}+", None, b"", damage)
    elif after < len(text):
        yield Raw(f"{locator}+", None, text[after:after + 200], "not_json: text after the array's closing ']'")


def _element_problem(value, raw: str) -> str | None:
    if len(raw) > MAX_RECORD_BYTES // 4 and (n := len(raw.encode("utf-8", "surrogatepass"))) > MAX_RECORD_BYTES:
        return too_large(n)
    if len(raw) > MAX_DEPTH and deeper_than_limit(raw):
        return too_deep()
    if SURROGATE.search(raw) or not storable(value):
        return "undecodable: invalid UTF-8 in this element"
    if type(value) is not dict:
        return f"not_object: a JSON {type(value).__name__}, not an object"
    return None


def _element_end(text: str, pos: int) -> int | None:
    """Where the array element at `pos` ends (the `,` or `]` after it), found by its brackets; None if never."""
    depth = 0
    for match in ELEMENT_TOKEN.finditer(text, pos):
        char = match.group()
        if char in "[{":
            depth += 1
        elif char in "]}" and depth:
            depth -= 1
        elif char in ",]}" and depth == 0:
            return match.start()
    return None


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
