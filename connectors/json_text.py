"""JSON text: JSON lines and JSON arrays as records, with nesting depth and size bounded.

- JSONL / NDJSON (and `.json` files that do not start with `[`: `is_jsonl`) is streamed in blocks of whole lines
  (`jsonl_chunks`), so memory does not grow with the file; a block is parsed whole (`lines_to_records`, or column-wise
  by the caller). A line longer than MAX_RECORD_BYTES is never held whole: it is one `too_large` bad record.
- A JSON array (`read_json_array`) is decoded element by element from the text, which is held whole. After an element
  that is not JSON the rest of the array is unreadable; one nested too deep is skipped by its brackets.
- Depth: orjson allows 1024 levels and `json` recurses, so nesting past MAX_DEPTH (`too_deep`) is found by counting
  brackets outside strings (`deeper_than_limit`), after a cheap bound per block (`may_nest_deeper`) that spares most
  lines the exact count. Text that cannot be stored as UTF-8 (a lone surrogate from a `\\ud800` escape) is
  `undecodable` (`storable`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import orjson

from connectors.streams import BOM, STREAM_ERRORS, SURROGATE, Raw, blocks, check_encoding
from connectors.walk import SUFFIXES, data_suffix, is_datasets_dir
from schemas.limits import MAX_DEPTH, MAX_RAW_BYTES, MAX_RECORD_BYTES, too_deep, too_large

JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))
NOT_OPENING = bytes(set(range(256)) - set(b"[{\n"))
DEEP_LINE = re.compile(rb"[\[{]{%d}" % (MAX_DEPTH + 1))  # in a block with all else but newlines taken out
ELEMENT_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]', re.S)


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
    MAX_RECORD_BYTES, which is never held whole (the block is its first bytes). Damage before any data is a damaged
    line 1. A UTF-8 byte order mark at the start is dropped.
    """
    check_encoding(path)
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
        where = f"after line {number - 1}" if number > 1 else "before its first line ends"
        yield number, carry, f"unreadable: the file is damaged {where} ({exc})"
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


def read_json_array(path: Path) -> Iterator[Raw]:
    check_encoding(path)
    parts, damage = [], None
    try:
        for block in blocks(path):
            parts.append(block)
    except STREAM_ERRORS as exc:
        damage = f"unreadable: the file is damaged ({exc})"
        if not parts:
            yield Raw(f"{path.name}:1", None, b"", damage)
            return
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
