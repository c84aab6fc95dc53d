"""connectors.walk, .files, .json_text and .streams: finding a source's files (`expand`) and streaming their records
(`read_records`, `jsonl_chunks` + `lines_to_records`), with the locator and reason of every bad record.

All fixtures are generated here under tmp_path.
"""

from __future__ import annotations

import bz2
import gzip
import json
import random
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
import zstandard

from connectors.files import read_records
from connectors.json_text import jsonl_chunks, lines_to_records
from connectors.walk import expand
from pipelines.core.errors import SourceError

# One line per case the JSONL reader must handle; the comment is the 1-based line number (= the locator).
JSONL = b"".join([
    b'{"id": 1, "text": "caf\xc3\xa9"}\n',          # 1 good, UTF-8 text
    b"\n",                                           # 2 blank: skipped, but still counted
    b'{"id": 2, broken\n',                           # 3 not JSON
    b"[1, 2]\n",                                     # 4 a JSON array, not an object
    b"3\n",                                          # 5 a JSON number
    b'{"id": "\xff\xfe"}\n',                         # 6 invalid UTF-8 bytes
    b'{"id": "\\ud800"}\n',                          # 7 a lone-surrogate escape
    b'{"id": 3, "pair": "\\ud83d\\ude00"}\r\n',      # 8 CRLF; a valid surrogate pair is fine
    b"\r\n",                                         # 9 blank CRLF line
    b'{"id": 4, "long": "' + b"y" * 150 + b'"}\n',  # 10 longer than a 64-byte block
    b'{"id": 5}',                                    # 11 last line without a newline
])

JSONL_EXPECTED = [
    ("x.jsonl:1", {"id": 1, "text": "café"}, None),
    ("x.jsonl:3", None, "not_json: Expecting property name enclosed in double quotes at column 11"),
    ("x.jsonl:4", None, "not_object: a JSON list, not an object"),
    ("x.jsonl:5", None, "not_object: a JSON int, not an object"),
    ("x.jsonl:6", None, "undecodable: invalid UTF-8 at byte 8"),
    ("x.jsonl:7", None, "undecodable: a \\u escape makes a lone surrogate"),
    ("x.jsonl:8", {"id": 3, "pair": "\U0001F600"}, None),
    ("x.jsonl:10", {"id": 4, "long": "y" * 150}, None),
    ("x.jsonl:11", {"id": 5}, None),
]

COMPRESS = {".gz": gzip.compress, ".bz2": bz2.compress, ".zst": lambda data: zstandard.ZstdCompressor().compress(data)}


def triples(raws, name: str | None = None) -> list[tuple]:
    """(locator, record, error) for each Raw; `name` (a compressed file's name) is rewritten to x.jsonl."""
    out = []
    for r in raws:
        locator = r.locator.replace(name, "x.jsonl", 1) if name else r.locator
        out.append((locator, r.record, r.error))
    return out


def chunked(path: Path, size: int) -> list:
    return [raw for chunk in jsonl_chunks(path, size) for raw in lines_to_records(path.name, chunk)]


def jsonl_lines(n: int, seed: int = 0) -> bytes:
    """n JSONL lines of incompressible padding, so that a cut in the compressed file lands mid-stream."""
    rnd = random.Random(seed)
    return b"".join(json.dumps({"i": i, "pad": rnd.randbytes(20).hex()}).encode() + b"\n" for i in range(n))


def decodable_lines(compressed: bytes) -> list[bytes]:
    """The complete lines zlib can recover from a truncated gzip: what a reader should keep."""
    text = zlib.decompressobj(31).decompress(compressed)
    return text.split(b"\n")[:-1]


def assert_truncated(raws, name: str, good: list[bytes]) -> None:
    """The recoverable lines as records, with their line locators, then exactly one `unreadable:` record."""
    assert len(good) > 0
    assert [(r.locator, r.record) for r in raws[:-1]] == [
        (f"{name}:{i}", json.loads(line)) for i, line in enumerate(good, 1)]
    assert all(r.error is None for r in raws[:-1])
    assert raws[-1].record is None and raws[-1].error.startswith("unreadable:")
    assert raws[-1].locator == f"{name}:{len(good) + 1}"


# --- JSONL ---------------------------------------------------------------------------------------------------------

def test_jsonl_records_locators_and_reasons(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(JSONL)
    raws = list(read_records(path))
    assert triples(raws) == JSONL_EXPECTED
    bad = {r.locator: r.raw for r in raws if r.error}
    assert bad["x.jsonl:3"] == b'{"id": 2, broken'  # raw keeps the line's bytes, without the newline
    assert bad["x.jsonl:6"] == b'{"id": "\xff\xfe"}'
    assert bad["x.jsonl:7"] == b'{"id": "\\ud800"}'


@pytest.mark.parametrize("suffix", [".ndjson", ".json"])
def test_ndjson_and_json_that_is_not_an_array_are_read_as_jsonl(tmp_path, suffix):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(JSONL)
    assert triples(read_records(path), path.name) == JSONL_EXPECTED


@pytest.mark.parametrize("ext", sorted(COMPRESS))
def test_compressed_jsonl_gives_the_same_records(tmp_path, ext):
    path = tmp_path / f"x.jsonl{ext}"
    path.write_bytes(COMPRESS[ext](JSONL))
    raws = list(read_records(path))
    assert raws[0].locator == f"x.jsonl{ext}:1"
    assert triples(raws, path.name) == JSONL_EXPECTED


def test_truncated_gzip_keeps_the_records_before_the_cut(tmp_path):
    data = gzip.compress(jsonl_lines(400))
    cut = data[: len(data) // 2]
    path = tmp_path / "t.jsonl.gz"
    path.write_bytes(cut)
    assert_truncated(list(read_records(path)), path.name, decodable_lines(cut))


def test_truncated_gzip_keeps_the_records_before_the_cut_with_one_byte_blocks(tmp_path):
    # Reads of one byte never lose decoded data, so this pins the expected result of the test above.
    data = gzip.compress(jsonl_lines(400))
    cut = data[: len(data) // 2]
    path = tmp_path / "t.jsonl.gz"
    path.write_bytes(cut)
    raws = chunked(path, 1)
    assert_truncated(raws, path.name, decodable_lines(cut))
    assert raws[-1].error.startswith(f"unreadable: the file is damaged after line {len(raws) - 1} (")


def test_truncated_gzip_with_small_blocks_keeps_every_record_before_the_cut(tmp_path):
    data = gzip.compress(jsonl_lines(400))
    path = tmp_path / "t.jsonl.gz"
    for k in range(1, 20):
        cut = data[: len(data) * k // 20]
        path.write_bytes(cut)
        assert_truncated(chunked(path, 64), path.name, decodable_lines(cut))


@pytest.mark.parametrize("name", [
    "n.jsonl.gz",
    "n.csv.gz",
    "n.json.gz",
])
def test_gz_that_is_not_gzip_is_a_source_error_naming_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b'[{"a": 1}]\n' if name.endswith(".json.gz") else b'{"a": 1}\n')
    try:
        list(read_records(path))
    except SourceError as exc:
        assert name in str(exc)
    except Exception as exc:  # noqa: BLE001 - the wrong exception type is the failure being tested
        raise AssertionError(f"{type(exc).__name__}: {exc}") from None
    else:
        raise AssertionError("no error")


def test_truncated_gzip_json_array_is_a_source_error_or_a_bad_record(tmp_path):
    data = gzip.compress(json.dumps([{"i": i} for i in range(50)], indent=1).encode())
    path = tmp_path / "t.json.gz"
    path.write_bytes(data[:-20])  # only the trailer's CRC/size and a little data are missing
    try:
        raws = list(read_records(path))
    except SourceError as exc:
        assert path.name in str(exc)
    except Exception as exc:  # noqa: BLE001
        raise AssertionError(f"{type(exc).__name__}: {exc}") from None
    else:
        assert raws[-1].error.startswith("unreadable:")


@pytest.mark.parametrize("fraction", [0.5, 0.75])
def test_truncated_zst_is_reported(tmp_path, fraction):
    data = zstandard.ZstdCompressor().compress(jsonl_lines(3000))  # ~250 KB: two zstd blocks
    path = tmp_path / "t.jsonl.zst"
    path.write_bytes(data[: int(len(data) * fraction)])
    try:
        raws = list(read_records(path))
    except SourceError:
        return
    assert raws and raws[-1].error.startswith("unreadable:")
    assert all(r.error is None for r in raws[:-1])


@pytest.mark.parametrize("compress, ext", [(bz2.compress, ".bz2"), (gzip.compress, ".gz"),
                                            (lambda d: zstandard.ZstdCompressor().compress(d), ".zst")])
def test_a_truncated_stream_with_nothing_decodable_is_one_unreadable_record(tmp_path, compress, ext):
    """One bz2 block, cut in half: nothing decodes before the cut. The file is in its format, so this is damage
    (one bad record, the run goes on), not a file that cannot be read at all."""
    data = compress(jsonl_lines(200))
    path = tmp_path / f"t.jsonl{ext}"
    path.write_bytes(data[:40])
    raws = list(read_records(path))
    assert [(r.locator, r.record) for r in raws] == [(f"{path.name}:1", None)]
    assert raws[0].error.startswith("unreadable: the file is damaged before its first line ends")


def test_a_compressed_suffix_on_a_file_in_another_format_is_a_source_error(tmp_path):
    path = tmp_path / "t.jsonl.bz2"
    path.write_bytes(gzip.compress(jsonl_lines(5)))
    with pytest.raises(SourceError, match="t.jsonl.bz2 is not a bzip2 file"):
        list(read_records(path))


# --- jsonl_chunks ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", ["", ".gz", ".zst"])
def test_jsonl_chunks_with_small_blocks_match_read_records(tmp_path, ext):
    path = tmp_path / f"x.jsonl{ext}"
    path.write_bytes(COMPRESS[ext](JSONL) if ext else JSONL)
    chunks = list(jsonl_chunks(path, 64))
    assert len(chunks) > 3 and all(damage is None for _, _, damage in chunks)
    assert [n for n, _, _ in chunks] == sorted({n for n, _, _ in chunks})  # first line numbers increase
    raws = [raw for chunk in chunks for raw in lines_to_records(path.name, chunk)]
    assert triples(raws, path.name) == JSONL_EXPECTED
    assert [(r.locator, r.record, r.raw, r.error) for r in raws] == [
        (r.locator, r.record, r.raw, r.error) for r in read_records(path)]


def test_jsonl_chunks_blocks_hold_whole_lines(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(JSONL)
    chunks = list(jsonl_chunks(path, 64))
    assert b"".join(block for _, block, _ in chunks) == JSONL
    assert all(block.endswith(b"\n") for _, block, _ in chunks[:-1])
    assert chunks[-1] == (11, b'{"id": 5}', None)


def test_jsonl_chunks_match_read_records_on_a_truncated_gzip(tmp_path):
    data = gzip.compress(jsonl_lines(400))
    path = tmp_path / "t.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    expected = [(r.locator, r.record, r.error) for r in read_records(path)]
    assert triples(chunked(path, 64)) == expected


# --- JSON arrays -----------------------------------------------------------------------------------------------------

def test_json_array_elements_and_their_line_locators(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('\n[\n  {"a": 1},\n  {\n    "b": "x\\ny"\n  },\n  7,\n  {"c": 3}, {"d": [1, 2]},\n'
                    '  "s", [1], {"e": "\\ud800"}\n]\n')
    assert triples(read_records(path)) == [
        ("a.json:3", {"a": 1}, None),
        ("a.json:4", {"b": "x\ny"}, None),  # an element spanning lines: the line where it starts
        ("a.json:7", None, "not_object: a JSON int, not an object"),
        ("a.json:8", {"c": 3}, None),
        ("a.json[4]", {"d": [1, 2]}, None),  # on the line of the one before: its index, so locators stay unique
        ("a.json:9", None, "not_object: a JSON str, not an object"),
        ("a.json[6]", None, "not_object: a JSON list, not an object"),
        ("a.json[7]", None, "undecodable: invalid UTF-8 in this element"),
    ]


def test_json_array_with_invalid_utf8_element(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b'[{"a": 1},\n {"b": "\xff"},\n {"c": 2}]')
    assert triples(read_records(path)) == [
        ("a.json:1", {"a": 1}, None),
        ("a.json:2", None, "undecodable: invalid UTF-8 in this element"),
        ("a.json:3", {"c": 2}, None),
    ]


def test_truncated_json_array_keeps_the_elements_before_the_cut(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[\n  {"a": 1},\n  {"b": 2},\n  {"c": ')
    raws = list(read_records(path))
    assert triples(raws) == [
        ("a.json:2", {"a": 1}, None),
        ("a.json:3", {"b": 2}, None),
        ("a.json:4", None, "not_json: Expecting value; the rest of the array is unreadable"),
    ]
    assert raws[-1].raw == '{"c": '


def test_json_array_cut_after_a_comma_is_not_closed(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[{"a": 1}, {"b": 2},')
    assert triples(read_records(path)) == [
        ("a.json:1", {"a": 1}, None),
        ("a.json[1]", {"b": 2}, None),
        ("a.json[1]+", None, "not_json: the array is not closed (truncated file?)"),  # after the last element
    ]


def test_gzipped_json_array(tmp_path):
    path = tmp_path / "a.json.gz"
    path.write_bytes(gzip.compress(b'[\n{"a": 1},\n{"b": 2}\n]\n'))
    assert triples(read_records(path)) == [("a.json.gz:2", {"a": 1}, None), ("a.json.gz:3", {"b": 2}, None)]


# --- CSV -------------------------------------------------------------------------------------------------------------

def test_csv_rows_locators_and_json_cells(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(
        b'id,text,tags\r\n'                        # 1 header
        b'1,"line one\r\nline two","[""a"", ""b""]"\r\n'  # 2-3 a quoted multi-line cell, a JSON list cell
        b'2,plain,\r\n'                            # 4
        b'3,too,many,fields\r\n'                   # 5 one field too many
        b'\r\n'                                    # 6 blank: skipped
        b'4,"{""k"": 1}",[not json\r\n'            # 7 a JSON object cell; a cell that only looks like JSON
        b'5,short\r\n'                             # 8 one field short
        b'6,"caf\xc3\xa9",{}\r\n'                  # 9
        b'7,"\xff",x\r\n'                          # 10 invalid UTF-8
        b'8,last,"[1, 2]"')                        # 11 no newline at the end
    raws = list(read_records(path))
    assert triples(raws) == [
        ("c.csv:2", {"id": "1", "text": "line one\r\nline two", "tags": ["a", "b"]}, None),
        ("c.csv:4", {"id": "2", "text": "plain", "tags": ""}, None),
        ("c.csv:5", None, "bad_row: 4 fields where the header has 3"),
        ("c.csv:7", {"id": "4", "text": {"k": 1}, "tags": "[not json"}, None),
        ("c.csv:8", None, "bad_row: 2 fields where the header has 3"),
        ("c.csv:9", {"id": "6", "text": "café", "tags": {}}, None),
        ("c.csv:10", None, "undecodable: invalid UTF-8 in this row"),
        ("c.csv:11", {"id": "8", "text": "last", "tags": [1, 2]}, None),
    ]
    assert raws[2].raw == "3,too,many,fields"


def test_gzipped_csv(tmp_path):
    path = tmp_path / "c.csv.gz"
    path.write_bytes(gzip.compress(b'a,b\n1,"[1]"\n2,x\n'))
    assert triples(read_records(path)) == [("c.csv.gz:2", {"a": "1", "b": [1]}, None),
                                          ("c.csv.gz:3", {"a": "2", "b": "x"}, None)]


# --- Parquet, Arrow, datasets ----------------------------------------------------------------------------------------

TABLE = pa.table({"i": list(range(10)), "s": [f"s{i}" for i in range(10)]})
ROWS = [{"i": i, "s": f"s{i}"} for i in range(10)]


def test_parquet_row_locators_continue_across_row_groups(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(TABLE, path, row_group_size=4)
    assert pq.ParquetFile(path).num_row_groups == 3
    assert triples(read_records(path)) == [(f"p.parquet[{i}]", row, None) for i, row in enumerate(ROWS)]


@pytest.mark.parametrize("name", ["f.arrow", "s.arrow", "f.feather"])
def test_arrow_ipc_file_and_stream(tmp_path, name):
    path = tmp_path / name
    if name.startswith("f.arrow"):
        with pa.ipc.new_file(path, TABLE.schema) as writer:
            for batch in TABLE.to_batches(max_chunksize=3):
                writer.write_batch(batch)
    elif name.startswith("s."):
        with pa.ipc.new_stream(path, TABLE.schema) as writer:
            for batch in TABLE.to_batches(max_chunksize=3):
                writer.write_batch(batch)
    else:
        feather.write_feather(TABLE, path, chunksize=3)
    assert triples(read_records(path)) == [(f"{name}[{i}]", row, None) for i, row in enumerate(ROWS)]


@pytest.mark.parametrize("name", ["bad.parquet", "bad.arrow"])
def test_unreadable_columnar_file_is_a_source_error(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"not a columnar file at all\n")
    with pytest.raises(SourceError, match=name):
        list(read_records(path))


def test_datasets_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    import datasets
    datasets.Dataset.from_list([{"a": 1, "t": "x"}, {"a": 2, "t": "y"}]).save_to_disk(str(tmp_path / "ds"))
    assert expand(tmp_path / "ds") == [tmp_path / "ds"]
    assert triples(read_records(tmp_path / "ds")) == [
        ("ds/data-00000-of-00001.arrow[0]", {"a": 1, "t": "x"}, None),
        ("ds/data-00000-of-00001.arrow[1]", {"a": 2, "t": "y"}, None),
    ]


def test_datasets_dict_directory_reads_every_split(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    import datasets
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list([{"a": 1}, {"a": 2}]),
        "test": datasets.Dataset.from_list([{"a": 3}]),
    }).save_to_disk(str(tmp_path / "dd"))
    assert expand(tmp_path / "dd") == [tmp_path / "dd"]
    assert triples(read_records(tmp_path / "dd")) == [
        ("train/data-00000-of-00001.arrow[0]", {"a": 1}, None),
        ("train/data-00000-of-00001.arrow[1]", {"a": 2}, None),
        ("test/data-00000-of-00001.arrow[0]", {"a": 3}, None),
    ]


# --- expand ----------------------------------------------------------------------------------------------------------

def make_tree(root: Path) -> None:
    for rel in ["a.jsonl", "b.csv", "sub/c.jsonl.gz", "sub/deep/d.parquet", "sub/e.json", "sub/f.ndjson.zst",
                "notes.md", "skip.py", "skip.log", "README", "sub/skip.tar.gz", "sub/deep/skip.bin"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")


def test_expand_a_glob(tmp_path):
    make_tree(tmp_path)
    assert expand(str(tmp_path / "*.jsonl")) == [tmp_path / "a.jsonl"]
    assert expand(str(tmp_path / "**" / "*.jsonl*")) == [tmp_path / "a.jsonl", tmp_path / "sub" / "c.jsonl.gz"]


def test_expand_a_directory_is_recursive_and_ignores_non_data_files(tmp_path):
    make_tree(tmp_path)
    assert expand(tmp_path) == [tmp_path / p for p in [
        "a.jsonl", "b.csv", "notes.md", "sub/c.jsonl.gz", "sub/deep/d.parquet", "sub/e.json", "sub/f.ndjson.zst"]]


def test_expand_a_single_file(tmp_path):
    (tmp_path / "a.data").write_bytes(b"")
    assert expand(tmp_path / "a.data") == [tmp_path / "a.data"]  # named explicitly: taken whatever its suffix


def test_expand_a_directory_holding_a_datasets_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    import datasets
    root = tmp_path / "src"
    root.mkdir()
    (root / "a.jsonl").write_bytes(b'{"a": 1}\n')
    datasets.Dataset.from_list([{"a": 2}]).save_to_disk(str(root / "ds"))
    assert expand(root) == [root / "a.jsonl", root / "ds"]


def test_expand_missing_path_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="source not found: .*nope.jsonl"):
        expand(tmp_path / "nope.jsonl")


def test_expand_glob_with_no_match_is_a_source_error(tmp_path):
    make_tree(tmp_path)
    with pytest.raises(SourceError, match=r"no data files match .*\*\.xml"):
        expand(str(tmp_path / "*.xml"))


def test_expand_directory_without_data_files_is_a_source_error(tmp_path):
    (tmp_path / "skip.py").write_bytes(b"")
    with pytest.raises(SourceError, match="no data files match"):
        expand(tmp_path)
