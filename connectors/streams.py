"""Bytes in: a file's bytes decompressed in blocks, the record every reader yields (`Raw`), and the encoding checks.

`blocks(path)` hands out a file's bytes, `.gz` (isal), `.bz2` or `.zst` decompressed, in blocks, so memory does not
grow with the file; `open_blocks` wraps them as a file object for readers that want one (CSV). Damage (a truncated or
corrupt stream) is raised only once all that decodes before it has come out: the decoder is fed STEP bytes at a time,
so damage loses at most what those decode to. A compressed file that does not start with its format's magic bytes
is a SourceError; damage after them, even before the first record, becomes one `unreadable` record where it was met
(readers turn STREAM_ERRORS into it), so one damaged file among many does not stop a run.

Ingest reads UTF-8: `check_encoding` refuses a file in UTF-16 or UTF-32 by name, a UTF-8 byte order mark (BOM) is
skipped, and bytes that are not UTF-8 are kept with `surrogateescape` (SURROGATE finds them), so the quarantine shows
them as they were (`Raw.raw_text`).
"""

from __future__ import annotations

import bz2
import io
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import zstandard
from isal import isal_zlib  # zlib's API, about 4x faster at gzip

from connectors.errors import SourceError
from schemas.limits import MAX_RAW_BYTES, size

DECOMPRESSORS = {".gz": lambda: isal_zlib.decompressobj(wbits=31), ".bz2": bz2.BZ2Decompressor,
                 ".zst": lambda: zstandard.ZstdDecompressor().decompressobj()}
STREAM_ERRORS = (EOFError, OSError, zlib.error, isal_zlib.error, zstandard.ZstdError)
# How each compressed format starts: a file without it is not that format at all (a SourceError), while damage
# after it is the file's content gone bad (an `unreadable` record, and the run goes on)
MAGIC = {".gz": (b"\x1f\x8b", "gzip"), ".bz2": (b"BZh", "bzip2"), ".zst": (b"\x28\xb5\x2f\xfd", "zstd")}
STEP = 16 << 10  # compressed bytes per decompress call: damage loses at most what this much decodes to
SURROGATE = re.compile(r"[\udc80-\udcff]")
BOM = b"\xef\xbb\xbf"


@dataclass(slots=True)
class Raw:
    """One record as read at `locator`: `record` a dict, or None with `error` saying why `raw` is not a usable one."""

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
        magic, codec = MAGIC[path.suffix.lower()]
        head = raw.read(len(magic))
        if head and not head.startswith(magic[:len(head)]) or 0 < len(head) < len(magic):
            raise SourceError(f"{path} is not a {codec} file (it does not start as one): rename it to what it is")
        raw.seek(0)
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


def open_blocks(path: Path) -> io.BufferedReader:
    """`blocks(path)` as a file object."""
    return io.BufferedReader(_BlockReader(blocks(path)))


def check_encoding(path: Path) -> None:
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
