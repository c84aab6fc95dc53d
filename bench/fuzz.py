"""Fuzz ingest: mutated real files, in every container and compression, through the real `Ingest` stage.

    python bench/fuzz.py [--cases 5000] [--seed 0] [--jobs 2] [--timeout 20]
    python bench/fuzz.py --case sharegpt-jsonl-gz-bad_utf8-17 [--keep DIR]   # one case, in-process, traceback shown

Prints a table (mutation x container -> cases, passed, refused, failed, max seconds), the failures grouped by
cause, and every failing case id with the first line of its error. `tests/test_fuzz.py` runs a fixed sample of the
same cases (it imports this module); a failing test is named by its case id and reruns alone with `--case`.

Seeds: the first 20 records (1000 for a damaged container) of each real file in ../shared/data/real (ShareGPT,
Alpaca (GPTeacher), hh-rlhf, Self-Instruct seed tasks, GSM8K, AlpacaEval), written as JSONL, a JSON array (one
element per line), CSV (nested values as JSON cells), Parquet and Arrow IPC. Text containers come plain, .gz, .bz2
and .zst; Parquet with its own codecs (none, snappy, zstd, gzip); Arrow as an IPC file (none, lz4, zstd) or stream.

A case id is `SEED-CONTAINER-COMPRESSION-MUTATION-N`; everything random in a case comes from `random.Random(id)`,
so an id rebuilds the same bytes on any machine. Mutations hit the uncompressed bytes, which are then compressed;
in Parquet and Arrow, flip / truncate / splice hit the file and the others one value of one record (strings are
written as bytes, so invalid UTF-8 gets in):
  none (a control), layout (JSON only: the array on one line, as json.dump writes it, or indented, elements
  spanning lines), flip (1-4 random bytes), truncate, splice (head of this file + tail of another seed's),
  nest_line ('[' x 100000 as a line, or balanced), nest_value (the same as a JSON value or inside a string; in CSV
  also a whole cell), huge_line (2-3 MB: a valid record with a huge string, or garbage), nul (NUL bytes anywhere,
  in a string, or a 4 KiB run), bom_utf8 (at the start of the file), bom_mid (a UTF-8/UTF-16 BOM starting a later
  line), utf16 (the whole file in UTF-16 with a BOM), crlf (line ends; in CSV the record ends; in Parquet / Arrow
  inside values), mixed_enc (one line in latin-1, cp1252 or UTF-16-LE), bad_utf8 (invalid UTF-8 inside a string:
  ff fe, lone continuation, overlong, CESU surrogate, cut sequence), lone_surrogate (a JSON `\\ud800` escape),
  dup_lines; and on the compressed bytes (a damaged container): zflip, ztruncate, zjunk (garbage, NULs or part of
  another member after the stream).

The oracle, per case (`run_case`, `_check_frames`):
1. Outcome. `Ingest(sources=(path,), kind="conversation").read(ctx)` runs to its end. The one exception allowed is
   a `SourceError` whose message names the file, and only when (a) the reference below finds no record in the
   file, or (b) it is a documented refusal, counted as `refused`: the format (the first readable record fixes it:
   "cannot tell the format of ..." / "... this recipe needs ...") or, for utf16 only, the encoding (ingest reads
   UTF-8 and refuses a file in UTF-16). Never for the benign inputs (4). Anything else (RecursionError, UnicodeError,
   polars or pyarrow errors, MemoryError, a Rust panic) fails, and so does a hang (each case runs in a worker
   process, killed after `--timeout` seconds) or a crash of that process.
2. Storable output. The frames concatenate, every Arrow array passes `validate(full=True)` (every string is
   UTF-8), and the frame round-trips through `write_parquet` / `pl.read_parquet`. Every row has a locator naming
   this file (kept rows in `meta.locator`, dropped rows in `locator`), and no locator occurs twice: a record that
   gives several items uses `file:3#0`, `file:3#1`, and `file:3` with `file:3#0` also fails.
3. Read = kept + quarantined. An independent reference says which records the file holds; each one's locator must
   be among the rows, kept or dropped:
   - JSONL (and a .json file that does not start with `[`): every non-blank line (split on b"\\n"; blank = ASCII
     whitespace only). For utf16 the lines of the decoded text (numbered as the bytes' lines are).
   - JSON array (a .json file starting with `[`, after a UTF-8 BOM): line 1 is `[`; each next line that is a
     complete JSON value (one trailing comma allowed) is an element, up to the first that is not or lacks its
     comma. If the array is damaged, unclosed or has data after its `]`, one more dropped row must say so.
     For layout, each element (found by decoding the valid array) by the line it starts on, and at least as many
     rows as elements (all distinct, as everywhere).
   - CSV: the records after the header (not all-empty) that Python's `csv` module finds in the text decoded as UTF-8
     with surrogateescape and `newline=""`, each numbered by its first line, up to a `csv.Error`.
   - Parquet: when the footer reads, rows 0..num_rows-1, each covered by a `file[i]` row or a `file[a:b]` row (an
     unreadable row group).
   - Arrow: the rows of the batches that read and validate before the first that does not; one more dropped row if
     one does not.
   - A damaged container: the damaged bytes are decoded 64 KiB of compressed input at a time (`connectors.streams`
     documents that damage loses at most what that much decodes to) until the decoder fails; the records wholly
     inside the longest common prefix of that output and the undamaged data must be accounted (what came before the
     damage is kept), and a damaged stream needs one more dropped row that marks the damage.
4. Benign inputs lose nothing: for none and layout, and in text files for crlf and bom_utf8, no SourceError and
   at least as many kept rows as the unmutated file in the same container and compression; for none, the kept ids
   equal those of the same records as plain JSONL. (In Parquet and Arrow, crlf and bom_utf8 change a value's text,
   a BOM in a role name or CRLF in hh-rlhf's `\\n\\nHuman:` markers, so there they are checked as damage.)
"""

from __future__ import annotations

import argparse
import bz2
import csv
import dataclasses
import gzip
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter, defaultdict
from functools import cache
from pathlib import Path

import zstandard

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SEED_RECORDS = 20
NEST = 100_000
MARK = "@@FUZZ@@"
BMARK = MARK.encode()

SEEDS = ("sharegpt", "alpaca", "hh_rlhf", "self_instruct", "gsm8k", "alpaca_eval")
TEXT_CONTAINERS = ("jsonl", "json", "csv")
COMPRESSIONS = {"jsonl": ("none", "gz", "bz2", "zst"), "json": ("none", "gz", "bz2", "zst"),
                "csv": ("none", "gz", "bz2", "zst"), "parquet": ("none", "snappy", "zstd", "gzip"),
                "arrow": ("none", "lz4", "zstd", "stream")}
SUFFIX = {"jsonl": ".jsonl", "json": ".json", "csv": ".csv", "parquet": ".parquet", "arrow": ".arrow"}
MUTATIONS = ("none", "layout", "flip", "truncate", "splice", "nest_line", "nest_value", "huge_line", "nul", "bom_utf8",
             "bom_mid", "utf16", "crlf", "mixed_enc", "bad_utf8", "lone_surrogate", "dup_lines")
Z_MUTATIONS = ("zflip", "ztruncate", "zjunk")
BINARY_BYTE_MUTATIONS = ("flip", "truncate", "splice")  # on the Parquet / Arrow file itself; the rest on a value
REFUSALS = ("cannot tell the format of", "this recipe needs")  # the first readable record fixes the format
ENCODING_REFUSALS = ("UTF-16", "UTF-32")  # documented: ingest reads UTF-8; a whole file in UTF-16 is refused
BAD_UTF8 = (b"\xff\xfe", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf8\x88\x80\x80\x80", b"\xfe")
UTF8_BOM = b"\xef\xbb\xbf"
REF_PIECE = 64 << 10  # compressed bytes fed to the reference decoder at a time (the bound connectors.streams documents)
Z_RECORDS = 1000  # a damaged container holds up to this many records: big enough for damage after the first piece
csv.field_size_limit(1 << 30)


# ---------------------------------------------------------------------------------------------------- cases

@dataclasses.dataclass(frozen=True)
class Case:
    seed: str
    container: str
    compression: str
    mutation: str
    n: int

    @property
    def id(self) -> str:
        return f"{self.seed}-{self.container}-{self.compression}-{self.mutation}-{self.n}"

    @classmethod
    def parse(cls, case_id: str) -> "Case":
        seed, container, compression, mutation, n = case_id.split("-")
        case = cls(seed, container, compression, mutation, int(n))
        assert seed in SEEDS and compression in COMPRESSIONS[container] and mutation in mutations_for(
            container, compression), f"not a valid case id: {case_id}"
        return case

    @property
    def filename(self) -> str:
        tail = f".{self.compression}" if self.container in TEXT_CONTAINERS and self.compression != "none" else ""
        return f"{self.seed}{SUFFIX[self.container]}{tail}"

    @property
    def text(self) -> bool:
        return self.container in TEXT_CONTAINERS


def benign(case: Case) -> bool:
    """Inputs that are not damage: the file must give the same rows as the unmutated one. (In a Parquet or Arrow
    value a BOM or CRLF changes the text itself: a BOM in a role name, CRLF in hh-rlhf's `\n\nHuman:` markers.)"""
    return case.mutation in ("none", "layout") or (case.mutation in ("crlf", "bom_utf8") and case.text)


def mutations_for(container: str, compression: str | None = None) -> tuple[str, ...]:
    if container in TEXT_CONTAINERS:
        own = tuple(m for m in MUTATIONS if m != "layout" or container == "json")
        return own + (Z_MUTATIONS if compression != "none" else ())
    return tuple(m for m in MUTATIONS if m not in ("nest_line", "layout"))


def case_ids(count: int, seed: int = 0) -> list[str]:
    """`count` cases, spread evenly over every (container, mutation) pair, the rest drawn from `seed`."""
    rng = random.Random(seed)
    pairs = [(c, m) for c in COMPRESSIONS for m in mutations_for(c)]
    out, order = [], []
    for i in range(count):
        if not order:
            order = pairs[:]
            rng.shuffle(order)
        container, mutation = order.pop()
        compressions = [c for c in COMPRESSIONS[container] if mutation not in Z_MUTATIONS or c != "none"]
        out.append(Case(rng.choice(SEEDS), container, rng.choice(compressions), mutation, i).id)
    return out


def e2e_case_ids(count: int = 15, seed: int = 1) -> list[str]:
    """Cases for a directory run through the CLI: ones ingest must read (never an allowed SourceError), so the
    whole run must finish with exit 0. Leaves out the mutations that may meet a documented refusal (flip and
    splice can turn the first record into one of an unknown format; a UTF-16 file is refused), the control, the
    benign BOM, and files the reference finds nothing readable in."""
    out, seen, per_container = [], Counter(), -(-count // len(COMPRESSIONS))
    for case_id in case_ids(count * 40, seed):
        case = Case.parse(case_id)
        if case.mutation in ("none", "flip", "splice", "bom_utf8", "utf16") or seen[case.container] >= per_container:
            continue
        if not expected(build(case)).readable:
            continue
        seen[case.container] += 1
        out.append(case_id)
        if len(out) == count:
            break
    return out


# ---------------------------------------------------------------------------------------------------- seeds

@cache
def seed_records(name: str, count: int = SEED_RECORDS) -> tuple:
    def jsonl(path: Path) -> list[dict]:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line, _ in zip(f, range(count))]

    files = {"sharegpt": "sharegpt_dummy_conversation.json", "alpaca": "gpteacher_roleplay_alpaca_format.json",
             "hh_rlhf": "hh_rlhf_harmless_base_test.jsonl.gz", "self_instruct": "self_instruct_seed_tasks.jsonl",
             "gsm8k": "gsm8k_test.jsonl", "alpaca_eval": "alpaca_eval_example_outputs.json"}
    path = REAL / files[name]
    records = json.loads(path.read_text())[:count] if path.suffix == ".json" else jsonl(path)
    return tuple(json.dumps(r) for r in records)  # immutable; each use decodes a fresh copy


def records_of(name: str, count: int = SEED_RECORDS) -> list[dict]:
    return [json.loads(r) for r in seed_records(name, count)]


def string_leaves(obj, path=()):
    """Paths to every string inside a record."""
    if isinstance(obj, str):
        yield path
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from string_leaves(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from string_leaves(v, path + (i,))


def set_leaf(obj, path, value):
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


def get_leaf(obj, path):
    for key in path:
        obj = obj[key]
    return obj


def mark_leaf(rng: random.Random, record: dict, where: str = "start") -> tuple:
    """Put MARK into a random string of `record` (at its start, or as the whole string); returns the leaf path."""
    leaves = list(string_leaves(record))
    path = rng.choice(leaves)
    old = get_leaf(record, path)
    set_leaf(record, path, MARK if where == "whole" else MARK + old)
    return path


# ---------------------------------------------------------------------------------------------------- writers

def dumps(record) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode("utf-8", "surrogatepass")


def write_jsonl(records: list[dict]) -> bytes:
    return b"".join(dumps(r) + b"\n" for r in records)


def write_json(records: list[dict]) -> bytes:
    return b"[\n" + b",\n".join(dumps(r) for r in records) + b"\n]\n"


def write_csv(records: list[dict], newline: str = "\n") -> bytes:
    header = []
    for r in records:
        header += [k for k in r if k not in header]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow(header)
    for r in records:
        cells = []
        for k in header:
            v = r.get(k)
            cells.append("" if v is None else v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
        writer.writerow(cells)
    return out.getvalue().encode("utf-8", "surrogatepass")


TEXT_WRITERS = {"jsonl": write_jsonl, "json": write_json, "csv": write_csv}


def _bytes_tree(obj):
    if isinstance(obj, str):
        return obj.encode("utf-8", "surrogatepass")
    if isinstance(obj, dict):
        return {k: _bytes_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_bytes_tree(v) for v in obj]
    return obj


def _string_type(t):
    import pyarrow as pa

    if pa.types.is_binary(t):
        return pa.string()
    if pa.types.is_large_binary(t):
        return pa.large_string()
    if pa.types.is_list(t):
        return pa.list_(_string_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _string_type(f.type)) for f in t])
    return t


def arrow_table(records: list[dict], raw: dict[str, bytes] | None = None):
    """Records -> an Arrow table whose strings are written as bytes, so invalid UTF-8 survives (no validation).

    `raw` maps MARK-holding leaves to the bytes that replace MARK."""
    import pyarrow as pa

    tree = _bytes_tree(records)

    def fill(obj):
        if isinstance(obj, bytes):
            for key, value in (raw or {}).items():
                obj = obj.replace(key, value)
            return obj
        if isinstance(obj, dict):
            return {k: fill(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [fill(v) for v in obj]
        return obj

    table = pa.Table.from_pylist([fill(r) for r in tree])
    columns = [pa.chunked_array([chunk.view(_string_type(chunk.type)) for chunk in col.chunks],
                                _string_type(col.type)) for col in table.columns]
    return pa.Table.from_arrays(columns, names=table.column_names)


def write_binary(container: str, compression: str, records: list[dict], raw: dict | None = None) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = arrow_table(records, raw)
    sink = io.BytesIO()
    if container == "parquet":
        pq.write_table(table, sink, compression=compression, row_group_size=7)  # 3 row groups of 20 rows
    elif compression == "stream":
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=7)
    else:
        options = pa.ipc.IpcWriteOptions(compression=None if compression == "none" else compression)
        with pa.ipc.new_file(sink, table.schema, options=options) as writer:
            writer.write_table(table, max_chunksize=7)
    return sink.getvalue()


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gz":
        return gzip.compress(data, mtime=0)
    if compression == "bz2":
        return bz2.compress(data)
    if compression == "zst":
        return zstandard.ZstdCompressor(write_checksum=True).compress(data)
    return data


def _decoder(compression: str):
    if compression == "gz":
        return zlib.decompressobj(wbits=31)
    if compression == "bz2":
        return bz2.BZ2Decompressor()
    return zstandard.ZstdDecompressor().decompressobj()


def decode_prefix(blob: bytes, compression: str, piece: int = REF_PIECE) -> tuple[bytes, bool]:
    """(what a decoder fed `piece` compressed bytes at a time yields before it fails, whether the stream is damaged).

    Concatenated members are read one after another, as gzip -d does."""
    out, decoder, started, pos = [], _decoder(compression), False, 0
    pending = b""
    try:
        while pos < len(blob) or pending:
            if not pending:
                pending, pos = blob[pos:pos + piece], pos + piece
            data, pending = pending, b""
            out.append(decoder.decompress(data))
            started = True
            if decoder.eof:
                pending, decoder, started = decoder.unused_data, _decoder(compression), False
    except (OSError, EOFError, zlib.error, zstandard.ZstdError, ValueError):
        return b"".join(out), True
    return b"".join(out), started


# ---------------------------------------------------------------------------------------------------- mutations

def words(rng: random.Random, size: int) -> str:
    pool = " ".join(json.loads(r).get("instruction") or json.dumps(json.loads(r)) for r in seed_records("alpaca"))
    pool = pool.split()
    out, n = [], 0
    while n < size:
        w = rng.choice(pool)
        out.append(w)
        n += len(w) + 1
    return " ".join(out)


def nest(rng: random.Random) -> bytes:
    return b"[" * NEST + (b"]" * NEST if rng.random() < 0.5 else b"")


def _split(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _record_lines(case: Case, lines: list[bytes]) -> list[int]:
    """Indexes of the lines that hold one JSON record (JSONL, JSON array)."""
    out = []
    for i, line in enumerate(lines):
        s = line.strip().rstrip(b",")
        if s.startswith(b"{") and s.endswith(b"}"):
            out.append(i)
    return out


def _relayout_line(line: bytes, edit) -> bytes:
    """Decode one record line, let `edit(record)` change it, write it back the same way (with its comma)."""
    comma = line.rstrip().endswith(b",")
    record = json.loads(line.strip().rstrip(b","))
    edit(record)
    return dumps(record) + (b"," if comma else b"")


def mutate_text(case: Case, rng: random.Random, data: bytes, other: bytes) -> bytes:
    """One mutation of the uncompressed bytes of a JSONL / JSON array / CSV file."""
    m = case.mutation
    lines = _split(data)
    records = _record_lines(case, lines) if case.container != "csv" else list(range(1, len(lines) - 1))
    body = list(range(1, len(lines) - 1)) if case.container != "jsonl" else list(range(0, len(lines) - 1))

    def edit_leaf(replace: bytes, where: str = "start", quoted: bool = False) -> bytes:
        """Put `replace` inside (or instead of, when quoted) a random string of a random record."""
        if case.container == "csv":
            recs = records_of(case.seed)
            r = rng.randrange(len(recs))
            mark_leaf(rng, recs[r], where)
            text = write_csv(recs)
            for pattern in ((b'""' + BMARK + b'""', b'"' + BMARK + b'"') if quoted else ()) + (BMARK,):
                if pattern in text:
                    return text.replace(pattern, replace, 1)
        i = rng.choice(records)
        lines[i] = _relayout_line(lines[i], lambda rec: mark_leaf(rng, rec, where))
        pattern = b'"' + BMARK + b'"' if quoted else BMARK
        lines[i] = lines[i].replace(pattern, replace, 1)
        return b"\n".join(lines)

    def insert_line(new: bytes) -> bytes:
        lines.insert(rng.choice(body or [0]), new)
        return b"\n".join(lines)

    if m == "none":
        return data
    if m == "layout":  # the same array as json.dump writes it (one line) or with indent=2 (elements span lines)
        indent = None if rng.random() < 0.5 else 2
        return json.dumps(records_of(case.seed), ensure_ascii=False, indent=indent).encode() + b"\n"
    if m == "flip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            if out:
                out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    if m == "truncate":
        return data[:rng.randrange(len(data) + 1)]
    if m == "splice":
        return data[:rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1):]
    if m == "nest_line":
        return insert_line(nest(rng))
    if m == "nest_value":
        if case.container == "csv" and rng.random() < 0.5:  # a whole cell: the reader decodes cells opening with [
            recs = records_of(case.seed)
            rec = rng.choice(recs)
            rec[rng.choice(list(rec))] = nest(rng).decode()
            return write_csv(recs)
        if rng.random() < 0.3:
            return edit_leaf(b"[" * NEST)  # inside a string: valid JSON
        return edit_leaf(nest(rng), "whole", quoted=True)
    if m == "huge_line":
        size = rng.randint(2 << 20, 3 << 20)
        if rng.random() < 0.5:  # garbage without a newline
            return insert_line(bytes(rng.choice(b"abc {}[]\",:xyz\\") for _ in range(4096)) * (size // 4096))
        return edit_leaf(words(rng, 1000).encode() * (size // 1000))  # a valid record with a huge string
    if m == "nul":
        how = rng.choice(("anywhere", "string", "run"))
        if how == "string":
            return edit_leaf(b"\x00" * rng.randint(1, 3))
        if how == "run":
            return insert_line(b"\x00" * 4096)
        out = bytearray(data)
        for _ in range(rng.randint(1, 5)):
            out.insert(rng.randrange(len(out) + 1), 0)
        return bytes(out)
    if m == "bom_utf8":
        return b"\xef\xbb\xbf" + data
    if m == "bom_mid":
        i = rng.choice(body[1:] or body or [0])
        lines[i] = rng.choice((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")) + lines[i]
        return b"\n".join(lines)
    if m == "utf16":
        text = data.decode("utf-8")
        return text.encode("utf-16") if rng.random() < 0.5 else b"\xfe\xff" + text.encode("utf-16-be")
    if m == "crlf":  # CSV: records end in CRLF (as Excel and Python's csv write them), newlines in cells stay
        return write_csv(records_of(case.seed), "\r\n") if case.container == "csv" else data.replace(b"\n", b"\r\n")
    if m == "mixed_enc":
        encoding = rng.choice(("latin-1", "cp1252", "utf-16-le"))
        marked = edit_leaf(b"caf\xc3\xa9 na\xc3\xafve fa\xc3\xa7ade ")
        lines = _split(marked)
        i = next(i for i, line in enumerate(lines) if b"caf\xc3\xa9 na" in line)
        lines[i] = lines[i].decode("utf-8").encode(encoding, "replace")
        return b"\n".join(lines)
    if m == "bad_utf8":
        return edit_leaf(rng.choice(BAD_UTF8))
    if m == "lone_surrogate":
        return edit_leaf(rng.choice((b"\\ud800", b"\\udfff", b"\\udc00x\\ud83d")))
    if m == "dup_lines":
        for _ in range(rng.randint(1, 5)):
            i = rng.choice(body or [0])
            lines.insert(rng.choice(body or [0]), lines[i])
        return b"\n".join(lines)
    raise ValueError(m)


def mutate_records(case: Case, rng: random.Random) -> tuple[list[dict], dict[bytes, bytes]]:
    """The value-level mutations for Parquet and Arrow: (records, {MARK: raw bytes to put in its place})."""
    m = case.mutation
    recs = records_of(case.seed)
    if m == "none":
        return recs, {}
    if m == "dup_lines":
        for _ in range(rng.randint(1, 5)):
            recs.insert(rng.randrange(len(recs) + 1), json.loads(json.dumps(rng.choice(recs))))
        return recs, {}
    if m == "crlf":
        for rec in recs:
            for path in string_leaves(rec):
                set_leaf(rec, path, get_leaf(rec, path).replace("\n", "\r\n"))
        return recs, {}
    rec = rng.choice(recs)
    value = {
        "nest_value": lambda: nest(rng),
        "huge_line": lambda: words(rng, 1000).encode() * (rng.randint(2 << 20, 3 << 20) // 1000),
        "nul": lambda: b"\x00" * rng.randint(1, 4096),
        "bom_utf8": lambda: b"\xef\xbb\xbf",
        "bom_mid": lambda: rng.choice((b"\xff\xfe", b"\xfe\xff")),
        "utf16": lambda: "caf\u00e9 \u6771\u4eac".encode("utf-16"),
        "mixed_enc": lambda: "caf\u00e9 na\u00efve".encode(rng.choice(("latin-1", "cp1252"))),
        "bad_utf8": lambda: rng.choice(BAD_UTF8),
        "lone_surrogate": lambda: b"\xed\xa0\x80",
    }[m]()
    mark_leaf(rng, rec, "whole" if m == "nest_value" else "start")
    return recs, {BMARK: value}


def flip_bytes(rng: random.Random, data: bytes) -> bytes:
    """1-4 random bytes set to random values."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def mutate_binary(case: Case, rng: random.Random, data: bytes, other: bytes) -> bytes:
    m = case.mutation
    if m == "flip":
        return flip_bytes(rng, data)
    if m == "truncate":
        return data[:rng.randrange(len(data) + 1)]
    if m == "splice":
        return data[:rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1):]
    raise ValueError(m)


def mutate_container(case: Case, rng: random.Random, blob: bytes, other: bytes) -> bytes:
    m = case.mutation
    if m == "zflip":
        return flip_bytes(rng, blob)
    if m == "ztruncate":
        return blob[:rng.randrange(len(blob))]
    if m == "zjunk":
        junk = rng.choice((bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))),
                           b"\x00" * rng.randint(1, 1024), other[:rng.randrange(1, len(other))]))
        return blob + junk
    raise ValueError(m)


@dataclasses.dataclass
class Built:
    case: Case
    file: bytes  # the bytes on disk
    original: bytes  # the undamaged uncompressed bytes (text) or the unmutated file (binary)
    data: bytes  # the uncompressed bytes the reader can get (text); the file (binary)
    damaged: bool = False  # a damaged container: `data` is the reference decoder's output


def build(case: Case) -> Built:
    rng = random.Random(case.id)
    others = [s for s in SEEDS if s != case.seed]
    other_seed = rng.choice(others)
    if case.text:
        write = TEXT_WRITERS[case.container]
        original = write(records_of(case.seed))
        if case.mutation in Z_MUTATIONS:
            original = write(records_of(case.seed, Z_RECORDS))
            blob = compress(original, case.compression)
            other = compress(write(records_of(other_seed, Z_RECORDS)), case.compression)
            damaged = mutate_container(case, rng, blob, other)
            data, bad = decode_prefix(damaged, case.compression)
            return Built(case, damaged, original, data, bad)
        data = mutate_text(case, rng, original, write(records_of(other_seed)))
        return Built(case, compress(data, case.compression), original, data)
    original = write_binary(case.container, case.compression, records_of(case.seed))
    if case.mutation in BINARY_BYTE_MUTATIONS:
        other = write_binary(case.container, case.compression, records_of(other_seed))
        data = mutate_binary(case, rng, original, other)
    else:
        recs, raw = mutate_records(case, rng)
        data = write_binary(case.container, case.compression, recs, raw)
    return Built(case, data, original, data)


# ---------------------------------------------------------------------------------------------------- reference

@dataclasses.dataclass
class Expected:
    required: set  # line numbers (text) that must appear as locators
    ranges: list  # [(start, stop)] row indexes (binary) that must be covered
    damaged: bool  # one more dropped row must mark damage (a damaged stream, an unclosed array, data after `]`)
    readable: bool  # the reference found something to read: a SourceError is then a lost file
    min_rows: int = 0  # rows at least (records may share a line: a one-line JSON array)


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    lo, hi = 0, n
    while lo < hi:  # binary search on equal prefixes
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def expected(built: Built) -> Expected:
    case = built.case
    if not case.text:
        return _expected_binary(built.data, case)
    data, damaged = built.data, built.damaged
    if case.mutation == "utf16":  # the records are the decoded text's; its lines are numbered as the bytes' are
        data = data.decode("utf-16").encode("utf-8")
    limit = len(data)
    if case.mutation in Z_MUTATIONS:
        limit = _common_prefix(data, built.original)  # beyond: garbage the damage made, nothing required
    # An array, read as one, or as JSONL: either way each element's line is a record (a reader may skip a BOM).
    routed_array = case.container == "json" and data.removeprefix(UTF8_BOM).lstrip().startswith(b"[")
    if case.mutation == "layout":  # a valid array in another layout: each element by its first line
        text, decoder, starts = data.decode("utf-8"), json.JSONDecoder(), []
        pos = text.index("[") + 1
        while True:
            pos = len(text) - len(text[pos:].lstrip(" \t\r\n,"))
            if text[pos] == "]":
                break
            starts.append(text.count("\n", 0, pos) + 1)
            pos = decoder.raw_decode(text, pos)[1]
        return Expected(set(starts), [], False, True, len(starts))
    if case.container == "csv":
        required, extra = _csv_records(data, limit, damaged)
    elif routed_array:
        required, extra = _array_elements(data, limit)
    else:  # JSONL, or a .json file that does not start with '[' (read as JSONL, as documented)
        lines = data[:limit].split(b"\n")
        complete = lines if limit == len(data) and not damaged else lines[:-1]
        required, extra = {n for n, line in enumerate(complete, 1) if line.strip()}, False
    return Expected(required, [], damaged or extra, bool(required))


def _array_elements(data: bytes, limit: int) -> tuple[set, bool]:
    lines = data.split(b"\n")
    required, offset = set(), 0
    first = lines[0].removeprefix(UTF8_BOM).strip()
    if first != b"[":
        return set(), True
    offset = len(lines[0]) + 1
    for n, line in enumerate(lines[1:], 2):
        end = offset + len(line)
        offset = end + 1
        s = line.strip()
        if s == b"]":
            rest = b"\n".join(lines[n:]).strip()
            return required, bool(rest)  # data after the closing bracket must not vanish silently
        if end >= limit:
            return required, True
        body = s[:-1] if s.endswith(b",") else s
        try:
            json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError, UnicodeDecodeError):
            return required, True
        required.add(n)
        if not s.endswith(b","):
            following = [x.strip() for x in lines[n:] if x.strip()]
            return required, not (following and following[0] == b"]" and following[1:] == [])
    return required, True  # not closed


def _csv_records(data: bytes, limit: int, damaged: bool) -> tuple[set, bool]:
    text = io.TextIOWrapper(io.BytesIO(data[:limit]), encoding="utf-8", errors="surrogateescape", newline="")
    reader = csv.reader(text)
    required, extra = [], False
    try:
        if next(reader, None) is None:
            return set(), False
        start = reader.line_num + 1
        for cells in reader:
            if any(cells):
                required.append(start)
            start = reader.line_num + 1
    except csv.Error:
        extra = True
    if (limit < len(data) or damaged) and required:
        required.pop()  # the last record may be cut by the damage
    return set(required), extra


def _expected_binary(data: bytes, case: Case) -> Expected:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if case.container == "parquet":
        try:
            meta = pq.ParquetFile(io.BytesIO(data)).metadata
            return Expected(set(), [(0, meta.num_rows)] if meta.num_rows else [], False, meta.num_rows > 0)
        except Exception:
            return Expected(set(), [], False, False)
    rows, damaged = 0, False
    try:
        try:
            reader = pa.ipc.open_file(pa.BufferReader(data))
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        except pa.ArrowInvalid:
            batches = iter(pa.ipc.open_stream(pa.BufferReader(data)))
    except Exception:
        return Expected(set(), [], False, False)
    try:
        for batch in batches:
            batch.validate(full=True)
            rows += batch.num_rows
    except Exception:
        damaged = True
    return Expected(set(), [(0, rows)] if rows else [], damaged, rows > 0)


# ---------------------------------------------------------------------------------------------------- running

# `file.jsonl:17`, `file.jsonl:17#0` (items of one record), `file.parquet[17]`, `file.parquet[14:21]` (a range);
# any other tail (`file.jsonl:17+`, `file.arrow[batch 3]`) is a row that marks damage and covers no record.
LOCATOR = re.compile(r"^(?P<name>[^:\[]+)(?::(?P<line>\d+)(?P<plus>[^#]*)|\[(?P<inner>[^\]]*)\])(?:#(?P<item>\d+))?$")
ROWS = re.compile(r"^(?P<row>\d+)(?::(?P<stop>\d+))?$")


def ingest(path: Path, run_dir: Path):
    """The real stage, in-process: the frames it yields."""
    from pipelines.core.stage import Context
    from pipelines.stages.ingest import Ingest

    ctx = Context(run_dir=run_dir, config=None)
    return list(Ingest(sources=(str(path),), kind="conversation").read(ctx))


def _where(exc: BaseException) -> str:
    """`Type in module.function`, from the innermost frame of this repository (the cause to group by)."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if f.filename.startswith(str(ROOT)) and "/bench/" not in f.filename
           and "/.venv/" not in f.filename]
    frame = own[-1] if own else (frames[-1] if frames else None)
    place = ""
    if frame is not None:
        module = Path(frame.filename).resolve()
        try:
            module = module.relative_to(ROOT)
        except ValueError:
            pass
        place = f" in {str(module.with_suffix('')).replace('/', '.')}.{frame.name}"
    return f"{type(exc).__name__}{place}"


def _first_line(text: str) -> str:
    lines = [x for x in str(text).strip().splitlines() if x.strip()]
    return (lines[0] if lines else "")[:300]


def run_case(case_id: str, work: Path, keep: Path | None = None, verbose: bool = False) -> dict:
    """Build one case, ingest it, check the oracle. Returns a JSON-able result."""
    import polars as pl
    from pipelines.core.errors import SourceError
    from pipelines.core.stage import DROP

    case = Case.parse(case_id)
    try:
        built = build(case)
        want = expected(built)
    except Exception as exc:  # noqa: BLE001 - a bug of this fuzzer, not of ingest
        if verbose:
            traceback.print_exc()
        return _broken(case_id, "generator", f"fuzzer bug: {_where(exc)}", f"{type(exc).__name__}: {exc}", 0.0)
    folder = keep or Path(tempfile.mkdtemp(dir=work))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / case.filename
    path.write_bytes(built.file)
    result = {"id": case_id, "ok": True, "refused": False, "failures": [], "rows": 0, "kept": 0,
              "required": len(want.required) + sum(b - a for a, b in want.ranges)}

    def fail(kind: str, cause: str, message: str) -> None:
        result["ok"] = False
        result["failures"].append({"kind": kind, "cause": cause, "message": _first_line(message)})

    start = time.perf_counter()
    frames = None
    try:
        frames = ingest(path, folder / "run")
    except SourceError as exc:
        message = str(exc)
        result["error"] = message
        if case.filename not in message:
            fail("oracle", "SourceError does not name the file", message)
        elif benign(case):
            fail("oracle", f"benign input refused ({case.mutation})", message)
        elif any(r in message for r in REFUSALS) or (
                case.mutation == "utf16" and any(r in message for r in ENCODING_REFUSALS)):
            result["refused"] = True
        elif want.readable:
            fail("oracle", "SourceError on a file with readable records", message)
    except BaseException as exc:  # noqa: BLE001 - a Rust panic is a BaseException
        if isinstance(exc, KeyboardInterrupt):
            raise
        if verbose:
            traceback.print_exc()
        fail("exception", _where(exc), f"{type(exc).__name__}: {exc}")
    result["seconds"] = time.perf_counter() - start

    if frames is not None:
        _check_frames(case, built, want, frames, result, fail, folder, pl, DROP)
    if keep is None:
        _rmtree(folder)
    return result


def _check_frames(case, built, want, frames, result, fail, folder, pl, DROP) -> None:
    try:
        rows = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
        for column in rows.to_arrow().columns:
            column.validate(full=True)
        rows.write_parquet(folder / "out.parquet")
        back = pl.read_parquet(folder / "out.parquet")
        assert back.height == rows.height, f"{back.height} rows read back of {rows.height}"
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, KeyboardInterrupt):
            raise
        fail("storable", f"output not storable: {type(exc).__name__}", f"{type(exc).__name__}: {exc}")
        return
    result["rows"] = rows.height
    if not rows.height:
        locators, kept = [], []
    else:
        drop = rows[DROP] if DROP in rows.columns else pl.Series([None] * rows.height)
        metas = rows["meta"] if "meta" in rows.columns else pl.Series([None] * rows.height)
        dropped_loc = rows["locator"] if "locator" in rows.columns else pl.Series([None] * rows.height)
        locators, kept = [], []
        for reason, meta, loc in zip(drop.to_list(), metas.to_list(), dropped_loc.to_list()):
            if reason is None:
                try:
                    loc = json.loads(meta)["locator"] if meta else None
                except (ValueError, KeyError, TypeError):
                    loc = None
                kept.append(loc)
            locators.append((loc, reason))
    result["kept"] = len(kept)
    result["dropped"] = result["rows"] - len(kept)

    seen: Counter = Counter(loc for loc, _ in locators)
    dups = sorted(loc for loc, n in seen.items() if n > 1 and loc is not None)
    if dups:
        fail("oracle", "a locator names two rows", f"{len(dups)} locators twice, e.g. {dups[:3]}")
    got_lines, got_rows, extra_drops, bases, nameless = set(), [], 0, Counter(), []
    for loc, reason in locators:
        m = LOCATOR.match(loc or "")
        if m is None or m["name"] != case.filename:
            nameless.append(f"locator {loc!r} (drop_reason {reason!r})")
            continue
        bases[(m["line"], m["inner"], m["plus"], m["item"] is not None)] += 1
        if m["line"] is not None:
            n = int(m["line"])
            if not m["plus"] and n in want.required:
                got_lines.add(n)
            if reason is not None and (m["plus"] or n not in want.required or seen[loc] > 1):
                extra_drops += 1
        elif not ROWS.match(m["inner"]):
            extra_drops += reason is not None
        else:
            rows_m = ROWS.match(m["inner"])
            a = int(rows_m["row"])
            b = int(rows_m["stop"]) if rows_m["stop"] else a + 1
            got_rows.append((a, b))
            if reason is not None and not any(x <= a and b <= y for x, y in want.ranges):
                extra_drops += 1
    if nameless:
        fail("oracle", "row without a locator naming the file", f"{len(nameless)} rows, e.g. {nameless[0]}")
    mixed = {k[:3] for k in bases if k[3]} & {k[:3] for k in bases if not k[3]}
    if mixed:
        fail("oracle", "a record is both one row and several items", f"locators {sorted(map(str, mixed))[:3]}")
    if len(locators) < want.min_rows:
        fail("oracle", "records lost (read > kept + quarantined)", f"{want.min_rows} records, {len(locators)} rows")
    missing = sorted(want.required - got_lines)
    if missing:
        fail("oracle", "records lost (read > kept + quarantined)",
             f"{len(missing)} of {len(want.required)} records not accounted for: lines {missing[:8]}")
    uncovered = _uncovered(want.ranges, got_rows)
    if uncovered:
        fail("oracle", "records lost (read > kept + quarantined)",
             f"{uncovered} of {sum(b - a for a, b in want.ranges)} rows not accounted for")
    if want.damaged and want.readable and not extra_drops and not uncovered and not missing:
        fail("oracle", "damage not reported", "the file is damaged but no dropped row says so")
    if benign(case):
        try:
            base = _baseline(case)
        except Exception as exc:  # noqa: BLE001
            fail("exception", f"baseline: {_where(exc)}", f"{type(exc).__name__}: {exc}")
            return
        if len(kept) < base["kept"]:
            fail("oracle", f"benign mutation loses rows ({case.mutation})",
                 f"kept {len(kept)} rows, the unmutated file keeps {base['kept']}")
        if case.mutation == "none" and base["ids"] != base["jsonl_ids"]:
            fail("oracle", f"containers disagree ({case.container})",
                 f"kept ids differ from plain JSONL: {len(base['ids'] ^ base['jsonl_ids'])} ids")


def _uncovered(ranges: list, got: list) -> int:
    missing = 0
    for a, b in ranges:
        covered = sorted((max(a, x), min(b, y)) for x, y in got if x < b and y > a)
        pos = a
        for x, y in covered:
            if x > pos:
                missing += x - pos
            pos = max(pos, y)
        missing += max(0, b - pos)
    return missing


@cache
def _baseline_of(seed: str, container: str, compression: str) -> tuple[int, frozenset]:
    import polars as pl
    from pipelines.core.stage import DROP

    case = Case(seed, container, compression, "none", 0)
    built = build(case)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / case.filename
        path.write_bytes(built.file)
        frames = ingest(path, Path(tmp) / "run")
    rows = pl.concat(frames, how="diagonal_relaxed")
    kept = rows.filter(pl.col(DROP).is_null()) if DROP in rows.columns else rows
    return kept.height, frozenset(kept["id"].to_list()) if kept.height else frozenset()


def _baseline(case: Case) -> dict:
    kept, ids = _baseline_of(case.seed, case.container, case.compression)
    _, jsonl_ids = _baseline_of(case.seed, "jsonl", "none")
    return {"kept": kept, "ids": ids, "jsonl_ids": jsonl_ids}


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------- workers

class Worker:
    """A process that runs cases one at a time; killed and restarted when a case hangs or kills it."""

    def __init__(self, timeout: float = 20.0):
        self.timeout = timeout
        self.proc = None
        self.work = Path(tempfile.mkdtemp(prefix="fuzz-worker-"))  # each case writes under it, and removes its files

    def _start(self) -> None:
        env = {**os.environ, "POLARS_MAX_THREADS": os.environ.get("POLARS_MAX_THREADS", "2"),
               "PYTHONUNBUFFERED": "1"}
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, "-X", "faulthandler", __file__, "--worker", str(self.work)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, cwd=ROOT,
                                     env=env, text=True, bufsize=1)

    def run(self, case_id: str) -> dict:
        import selectors

        if self.proc is None or self.proc.poll() is not None:
            self._start()
        start = time.perf_counter()
        mark = self.log.seek(0, os.SEEK_END)
        self.proc.stdin.write(case_id + "\n")
        self.proc.stdin.flush()
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        ready = sel.select(self.timeout)
        sel.close()
        line = self.proc.stdout.readline() if ready else ""
        seconds = time.perf_counter() - start
        if line:
            return json.loads(line)
        if ready:  # EOF: the process died
            code = self.proc.wait()
            self.proc = None
            self.log.seek(mark)
            said = self.log.read().decode("utf-8", "replace").strip().splitlines()
            said = next((x for x in said if "Fatal Python error" in x or "panicked" in x or "Error" in x), "")
            return _broken(case_id, "crash", f"worker died (exit {code})", f"the process ended with exit {code} "
                           f"(a segfault or abort in native code) {said}".strip(), seconds)
        self._stop()
        return _broken(case_id, "hang", "hang", f"no result after {self.timeout:.0f} s", seconds)

    def _stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def close(self) -> None:
        self._stop()
        _rmtree(self.work)


def _broken(case_id: str, kind: str, cause: str, message: str, seconds: float) -> dict:
    return {"id": case_id, "ok": False, "refused": False, "seconds": seconds, "rows": 0, "kept": 0,
            "failures": [{"kind": kind, "cause": cause, "message": message}]}


def worker_main(work: Path) -> None:
    import warnings

    warnings.simplefilter("ignore")
    for line in sys.stdin:
        case_id = line.strip()
        if case_id:
            result = run_case(case_id, work)
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()


def describe(result: dict) -> str:
    lines = [f"case {result['id']}: {len(result['failures'])} problem(s); rows {result.get('rows')}, kept "
             f"{result.get('kept')}, records required {result.get('required', '?')}"]
    for f in result["failures"]:
        lines.append(f"  [{f['kind']}] {f['cause']}: {f['message']}")
    lines.append(f"  reproduce: python bench/fuzz.py --case {result['id']} --keep /tmp/fuzz-case")
    return "\n".join(lines)


def run_many(ids: list[str], jobs: int, timeout: float, progress: bool = True) -> list[dict]:
    import threading

    workers = [Worker(timeout) for _ in range(jobs)]
    results: list = [None] * len(ids)
    lock, cursor = threading.Lock(), [0]

    def loop(worker: Worker) -> None:
        while True:
            with lock:
                i = cursor[0]
                cursor[0] += 1
            if i >= len(ids):
                return
            results[i] = worker.run(ids[i])
            if progress and (i + 1) % 100 == 0:
                print(f"  {i + 1}/{len(ids)} cases", file=sys.stderr, flush=True)

    threads = [threading.Thread(target=loop, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in workers:
        w.close()
    return results


def table(results: list[dict]) -> str:
    cells = defaultdict(lambda: {"cases": 0, "passed": 0, "refused": 0, "failed": 0, "max_s": 0.0})
    for r in results:
        case = Case.parse(r["id"])
        for key in ((case.mutation, case.container), (case.mutation, "all"), ("all", case.container),
                    ("all", "all")):
            c = cells[key]
            c["cases"] += 1
            c["passed"] += r["ok"]
            c["refused"] += r["ok"] and r["refused"]
            c["failed"] += not r["ok"]
            c["max_s"] = max(c["max_s"], r.get("seconds") or 0.0)
    header = f"{'mutation':<16}{'container':<10}{'cases':>7}{'passed':>8}{'refused':>9}{'failed':>8}{'max s':>8}"
    out = [header, "-" * len(header)]
    containers = list(COMPRESSIONS) + ["all"]
    for mutation in MUTATIONS + Z_MUTATIONS + ("all",):
        for container in containers:
            c = cells.get((mutation, container))
            if c:
                out.append(f"{mutation:<16}{container:<10}{c['cases']:>7}{c['passed']:>8}{c['refused']:>9}"
                           f"{c['failed']:>8}{c['max_s']:>8.2f}")
    return "\n".join(out)


def causes(results: list[dict]) -> str:
    groups = defaultdict(list)
    for r in results:
        for f in r["failures"]:
            groups[(f["kind"], f["cause"])].append((r["id"], f["message"]))
    out = []
    for (kind, cause), items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        cases = [Case.parse(i) for i, _ in items]
        muts = Counter(c.mutation for c in cases)
        conts = Counter(f"{c.container}/{c.compression}" for c in cases)
        out.append(f"[{kind}] {cause}: {len(items)} cases")
        out.append(f"    mutations: {', '.join(f'{k} {v}' for k, v in muts.most_common())}")
        out.append(f"    containers: {', '.join(f'{k} {v}' for k, v in conts.most_common())}")
        out.append(f"    e.g. {items[0][0]}: {items[0][1]}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds a case may take")
    parser.add_argument("--case", help="run one case id in this process, with its traceback")
    parser.add_argument("--keep", type=Path, help="with --case: write the mutated file (and run dir) here")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker)
        return
    if args.case:
        with tempfile.TemporaryDirectory() as tmp:
            result = run_case(args.case, Path(tmp), keep=args.keep, verbose=True)
        print(describe(result) if not result["ok"] else f"case {args.case}: passed "
              f"(rows {result['rows']}, kept {result['kept']}, refused {result['refused']})")
        if args.keep:
            print(f"file: {args.keep / Case.parse(args.case).filename}")
        sys.exit(0 if result["ok"] else 1)
    ids = case_ids(args.cases, args.seed)
    start = time.perf_counter()
    results = run_many(ids, args.jobs, args.timeout)
    seconds = time.perf_counter() - start
    print(table(results))
    failed = [r for r in results if not r["ok"]]
    refused = sum(r["refused"] for r in results if r["ok"])
    print(f"\n{len(results)} cases in {seconds:.0f} s ({args.jobs} workers): {len(results) - len(failed)} passed "
          f"({refused} of them refused: format or encoding), {len(failed)} failed")
    if failed:
        print("\nFailures by cause:")
        print(causes(results))
        print("\nFailing cases:")
        for r in failed:
            f = r["failures"][0]
            print(f"  {r['id']}: [{f['kind']}] {f['cause']}: {f['message']}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
