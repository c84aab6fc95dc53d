"""Ingest on hostile input (issue 15): invalid UTF-8, deep nesting, records over the size limits, symbolic link
cycles, damaged compressed files, byte order marks, UTF-16, NUL bytes and CRLF.

Every case keeps the invariant: records read = rows kept + rows quarantined, a bad record is one quarantined row
with a named reason, and nothing crashes or hangs. All fixtures are written to tmp_path.
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
import random
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
import zstandard

from conftest import ROOT, report
from connectors.files import read_records
from connectors.sources import SourceSpec
from connectors.streams import STEP
from connectors.walk import expand
from pipelines.core.errors import SourceError
from pipelines.core.stage import DROP, Context
from pipelines.stages import ingest as ingest_stage
from pipelines.stages.ingest import Ingest

DEEP = "[" * 100_000


def ingest(*sources, kind: str = "conversation", tmp_path: Path) -> pl.DataFrame:
    frames = list(Ingest(sources=tuple(map(str, sources)), kind=kind).read(Context(run_dir=tmp_path, config=None)))
    return pl.concat(frames, how="diagonal_relaxed")


def dropped(rows: pl.DataFrame) -> list[tuple[str, str]]:
    return rows.filter(pl.col(DROP).is_not_null()).select("locator", DROP).rows()


def stored_and_read_back(rows: pl.DataFrame, tmp_path: Path) -> pl.DataFrame:
    """The rows through Parquet and back, every string checked as UTF-8 (what the next stage would do)."""
    rows.write_parquet(tmp_path / "rows.parquet")
    back = pl.read_parquet(tmp_path / "rows.parquet")
    back.to_arrow().validate(full=True)
    back.to_dicts()
    return back


def chat(i: int, shape: str = "messages") -> dict:
    question, answer = f"Question {i}?", f"Answer {i}."
    if shape == "sharegpt":
        return {"conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]}
    if shape == "alpaca":
        return {"instruction": question, "output": answer}
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def jsonl(lines: list) -> bytes:
    return b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging (a symbolic link cycle used to make the directory walk run without end)."""
    def stop(*_):
        raise TimeoutError(f"still running after {seconds} s")
    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --- 1. invalid UTF-8 --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", ["messages", "sharegpt"])
def test_invalid_utf8_in_a_vectorised_block_is_one_quarantined_row(tmp_path, shape, monkeypatch):
    lines = [json.dumps(chat(i, shape)).encode() for i in range(10)]
    lines[4] = lines[4].replace(b"Question 4?", b"Question \xff\xfe4?")
    path = tmp_path / "file.jsonl"
    path.write_bytes(jsonl(lines))
    rows = ingest(path, tmp_path=tmp_path)
    [(locator, reason)] = dropped(rows)
    assert (rows.height, locator) == (10, "file.jsonl:5") and reason.startswith("undecodable: ")
    stored_and_read_back(rows, tmp_path)
    monkeypatch.setattr(ingest_stage, "fast_frame", lambda *a, **k: None)  # the record-by-record path agrees
    assert ingest(path, tmp_path=tmp_path).equals(rows)


def invalid_utf8_table() -> pa.Table:
    """Three Alpaca rows, the second with bytes that are not UTF-8 in a string column (Arrow does not check)."""
    values = [b"Question 0?", b"Question \xff\xfe1?", b"Question 2?"]
    offsets = pa.array([0, *[sum(map(len, values[:i + 1])) for i in range(3)]], pa.int32())
    instruction = pa.Array.from_buffers(pa.string(), 3, [None, offsets.buffers()[1], pa.py_buffer(b"".join(values))])
    return pa.table({"instruction": instruction, "output": ["Answer 0.", "Answer 1.", "Answer 2."]})


@pytest.mark.parametrize("name", ["a.jsonl", "a.json", "a.csv", "a.parquet", "a.arrow"])
def test_no_container_lets_invalid_utf8_into_a_row(tmp_path, name):
    path = tmp_path / name
    good = [chat(0, "alpaca"), chat(2, "alpaca")]
    if name == "a.jsonl":
        path.write_bytes(jsonl([good[0], b'{"instruction": "Question \xff\xfe1?", "output": "x"}', good[1]]))
    elif name == "a.json":
        path.write_bytes(b"[\n" + json.dumps(good[0]).encode() + b',\n{"instruction": "\xff\xfe", "output": "x"},\n'
                         + json.dumps(good[1]).encode() + b"\n]")
    elif name == "a.csv":
        path.write_bytes(b"instruction,output\nQuestion 0?,Answer 0.\nQuestion \xff\xfe1?,x\nQuestion 2?,Answer 2.\n")
    elif name == "a.parquet":
        pq.write_table(invalid_utf8_table(), path)
    else:
        feather.write_feather(invalid_utf8_table(), path, compression="uncompressed")
    rows = ingest(path, tmp_path=tmp_path)
    [(locator, reason)] = dropped(rows)
    assert rows.height == 3 and reason.startswith("undecodable: ")
    assert locator in (f"{name}:2", f"{name}:3", f"{name}[1]")
    assert stored_and_read_back(rows, tmp_path).filter(pl.col(DROP).is_null()).height == 2


# --- 2. deep nesting ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["alone", "a line of alpaca", "a line of messages", "inside messages",
                                  "closed inside messages", "a json array", "an element of a json array"])
def test_nesting_deeper_than_the_limit_is_one_quarantined_row(tmp_path, case):
    name = "deep.json" if "json array" in case else "deep.jsonl"
    path = tmp_path / name
    if case == "alone":
        path.write_text(DEEP + "\n")
    elif case == "a line of alpaca":
        path.write_bytes(jsonl([chat(0, "alpaca"), DEEP.encode(), chat(2, "alpaca")]))
    elif case == "a line of messages":
        path.write_bytes(jsonl([chat(0), DEEP.encode(), chat(2)]))
    elif case == "inside messages":
        path.write_bytes(jsonl([chat(0), ('{"messages": ' + DEEP + "}").encode(), chat(2)]))
    elif case == "closed inside messages":  # 3,000 levels: past orjson's 1,024 (and, closed, parsed by pyarrow)
        path.write_bytes(jsonl([chat(0), ('{"messages": ' + "[" * 3000 + "]" * 3000 + "}").encode(), chat(2)]))
    elif case == "a json array":
        path.write_text(DEEP)
    else:
        elements = [json.dumps(chat(0, "alpaca")), "[" * 5000 + "]" * 5000, json.dumps(chat(2, "alpaca"))]
        path.write_text("[" + ",\n".join(elements) + "]")
    rows = ingest(path, tmp_path=tmp_path)
    bad = dropped(rows)
    assert len(bad) == 1 and bad[0][1].startswith("too_deep: nesting > 512"), bad
    assert bad[0][0] == f"{name}:{1 if case in ('alone', 'a json array') else 2}"
    assert rows.filter(pl.col(DROP).is_null()).height == rows.height - 1
    assert rows.filter(pl.col(DROP).is_not_null())["raw"].str.len_bytes().max() < 70_000  # cut, not 100 KB


def test_nesting_within_the_limit_is_kept_even_past_orjsons_254_levels(tmp_path):
    extra = "[" * 500 + "]" * 500  # orjson reads 1,024 levels but writes only 254: `meta` must still be written
    lines = [json.dumps(chat(i, "alpaca"))[:-1] + f', "extra": {extra}}}' for i in range(2)]
    path = tmp_path / "ok.jsonl"
    path.write_text("\n".join(lines) + "\n")
    rows = ingest(path, tmp_path=tmp_path)
    assert rows.filter(pl.col(DROP).is_null()).height == 2
    assert json.loads(rows["meta"][0])["extra"] == json.loads(extra)


@pytest.mark.parametrize("name", ["n.jsonl", "n.json", "n.csv"])
def test_an_integer_too_long_for_python_is_one_bad_record_or_text(tmp_path, name):
    """json.loads raises a plain ValueError past 4,300 digits (not a JSONDecodeError): it must not end the run."""
    number = "7" * 5000
    path = tmp_path / name
    if name == "n.csv":  # a cell that only looks like JSON stays text
        path.write_text(f"instruction,output,n\nq,a,[{number}]\nq2,a2,1\n")
    else:
        records = [json.dumps(chat(0, "alpaca")), json.dumps(chat(1, "alpaca"))[:-1] + f', "n": {number}}}']
        path.write_text("\n".join(records) + "\n" if name == "n.jsonl" else "[" + ",\n".join(records) + "]")
    rows = ingest(path, tmp_path=tmp_path)
    assert rows.height == 2
    if name != "n.csv":
        assert dropped(rows) == [(f"{name}:2", "not_json: Exceeds the limit (4300 digits) for integer string "
                                               "conversion")]


# --- 3. named limits ---------------------------------------------------------------------------------------------

def turns(n: int, last: str = "Answer.") -> list[dict]:
    """n turns, user and assistant alternating, ending with an assistant turn that says `last`."""
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": "Question?" if i % 2 == 0 else "Answer."}
            for i in range(n - 1)] + [{"role": "assistant", "content": last}]


@pytest.mark.parametrize("shape", ["messages", "alpaca.json"])
def test_records_over_the_limits_get_named_reasons(tmp_path, shape):
    if shape == "messages":  # the vectorised path: the rows that fail its checks are redone one by one
        path = tmp_path / "limits.jsonl"
        path.write_bytes(jsonl([chat(0), {"messages": turns(5000)},
                                {"messages": [{"role": "user", "content": "x" * 200_000},
                                              {"role": "assistant", "content": "y"}]}, chat(3)]))
        where = ["limits.jsonl:2", "limits.jsonl:3"]
    else:  # a JSON array, record by record
        path = tmp_path / "limits.json"
        path.write_text(json.dumps([chat(0, "alpaca"), {"instruction": "x" * 200_000, "output": "y"}], indent=1))
        where = ["limits.json:6"]
    rows = ingest(path, tmp_path=tmp_path)
    bad = dropped(rows)
    reasons = ["too_many_turns: 5,000 > 256", "too_long: content of 200,000 characters > 100,000"]
    assert bad == list(zip(where, reasons[-len(where):]))
    assert rows.filter(pl.col(DROP).is_not_null())["raw"].str.ends_with("the first 64 KiB]").all()


def test_preference_pair_over_the_turn_limit_has_a_named_reason(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(jsonl([{"chosen": turns(5000, "Good."), "rejected": turns(5000, "Bad.")}]))
    rows = ingest(path, kind="preference", tmp_path=tmp_path)
    assert dropped(rows) == [("pairs.jsonl:1", "too_many_turns: 5,000 > 256")]


def test_a_record_over_16_mib_is_quarantined_without_being_held_whole(tmp_path):
    huge = json.dumps({"messages": [{"role": "user", "content": "x" * (17 << 20)},
                                    {"role": "assistant", "content": "y"}]}).encode()
    path = tmp_path / "huge.jsonl"
    path.write_bytes(jsonl([chat(0), huge, chat(2)]))
    rows = ingest(path, tmp_path=tmp_path)
    assert dropped(rows) == [("huge.jsonl:2", f"too_large: {len(huge):,} bytes > 16 MiB")]
    assert rows.height == 3 and rows["raw"].drop_nulls().str.len_bytes().max() < 70_000


# --- 4. directories and symbolic links ---------------------------------------------------------------------------

@pytest.fixture
def linked_tree(tmp_path):
    """d/x.jsonl (100 records) beside two links back to d itself."""
    d = tmp_path / "d"
    d.mkdir()
    (d / "x.jsonl").write_bytes(jsonl([chat(i, "alpaca") for i in range(100)]))
    os.symlink(".", d / "self")
    os.symlink(".", d / "b")
    return d


def test_symbolic_link_cycles_list_each_file_once_and_never_hang(linked_tree, tmp_path):
    d = linked_tree
    with deadline(20):
        assert expand(d) == [d / "x.jsonl"]
        assert expand(str(d / "**" / "*.jsonl")) == [d / "x.jsonl"]
        assert expand(str(d / "**")) == [d / "x.jsonl"]
        assert [f[0] for f in SourceSpec.parse(str(d)).files_identity()] == [str(d / "x.jsonl")]
        assert ingest(d, tmp_path=tmp_path).height == 100


def test_two_links_to_one_file_read_it_once_under_its_own_name(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "x.jsonl").write_bytes(jsonl([chat(0, "alpaca")]))
    os.symlink("real", tmp_path / "a_link")
    os.link(tmp_path / "real" / "x.jsonl", tmp_path / "real" / "y.jsonl")  # a hard link is the same file too
    assert expand(tmp_path) == [tmp_path / "real" / "x.jsonl"]


def test_looping_and_broken_links_are_named(tmp_path):
    os.symlink("loop", tmp_path / "loop")
    os.symlink("nowhere.jsonl", tmp_path / "broken.jsonl")
    with pytest.raises(SourceError, match=r"source .*loop is a symbolic link that loops \(.*loop -> loop\)"):
        expand(tmp_path / "loop")
    with pytest.raises(SourceError, match=r"source .*broken.jsonl is a broken symbolic link to nowhere.jsonl"):
        expand(tmp_path / "broken.jsonl")
    with pytest.raises(SourceError, match=r"broken.jsonl is a broken symbolic link to nowhere.jsonl"):
        expand(tmp_path)  # met while walking a directory: named, not skipped


# --- 5. damaged compressed files ---------------------------------------------------------------------------------

RECORDS = [{"instruction": random.Random(i).randbytes(30).hex(), "output": random.Random(-i).randbytes(30).hex()}
           for i in range(2500)]  # ~300 KB that hardly compresses: several bz2 (level 1) and zstd blocks
CONTENT = {
    "jsonl": jsonl(RECORDS),
    "json": json.dumps(RECORDS, indent=1).encode(),
    "csv": b"instruction,output\n" + b"".join(f"{r['instruction']},{r['output']}\n".encode() for r in RECORDS),
}
COMPRESS = {"gz": gzip.compress, "bz2": lambda data: bz2.compress(data, 1),
            "zst": lambda data: zstandard.ZstdCompressor().compress(data)}


def read_damaged(path: Path, data: bytes) -> tuple[list, list]:
    path.write_bytes(data)
    raws = list(read_records(path))
    good = [r.record for r in raws if r.error is None]
    assert raws[-1].error.startswith("unreadable: "), raws[-1]
    return raws, good


@pytest.mark.parametrize("codec", sorted(COMPRESS))
@pytest.mark.parametrize("container", sorted(CONTENT))
def test_damage_keeps_what_came_before_alike_in_every_compression(tmp_path, container, codec):
    compressed = COMPRESS[codec](CONTENT[container])
    half = len(compressed) // 2
    path = tmp_path / f"t.{container}.{codec}"
    raws, good = read_damaged(path, compressed[:half])  # cut
    assert len(good) > 200 and good == RECORDS[:len(good)]
    assert [r.error is not None for r in raws] == [False] * len(good) + [True]
    # the same data then zeros, from one decoder step on (a call that fails returns nothing): a decoder error, not
    # an end of data, and what came before it is kept all the same
    _, after_zeros = read_damaged(path, compressed[:half + STEP] + bytes(len(compressed) - half - STEP))
    assert after_zeros[:len(good)] == good


# --- byte order marks, UTF-16, NUL, CRLF -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["b.jsonl", "b.json", "b.csv", "m.jsonl"])
def test_a_utf8_byte_order_mark_is_skipped(tmp_path, name):
    records = [chat(i, "messages" if name == "m.jsonl" else "alpaca") for i in range(3)]
    path = tmp_path / name
    if path.suffix == ".csv":
        text = "instruction,output\n" + "".join(f"{r['instruction']},{r['output']}\n" for r in records)
    else:
        text = jsonl(records).decode() if path.suffix == ".jsonl" else json.dumps(records, indent=1)
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())  # and CRLF line ends
    rows = ingest(path, tmp_path=tmp_path)
    assert (rows.height, dropped(rows)) == (3, [])


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
@pytest.mark.parametrize("name", ["u.jsonl", "u.json", "u.csv"])
def test_utf16_and_utf32_files_are_one_line_source_errors(tmp_path, name, encoding):
    path = tmp_path / name
    path.write_bytes(('{"instruction": "q", "output": "a"}\n' if name != "u.csv" else "instruction,output\nq,a\n")
                     .encode(encoding))
    for source in [path] + ([f"{path}?format=alpaca"] if name == "u.jsonl" else []):  # detected or named
        with pytest.raises(SourceError, match=rf"{name} is UTF-(16|32)\S* text; ingest reads UTF-8") as error:
            ingest(source, tmp_path=tmp_path)
        assert "\n" not in str(error.value)


def test_nul_bytes_are_quarantined_or_kept_as_text(tmp_path):
    path = tmp_path / "nul.jsonl"
    escaped = {"messages": [{"role": "user", "content": "q\u0000"}, {"role": "assistant", "content": "a"}]}
    path.write_bytes(jsonl([chat(0), b'{"messages": [{"role": "user", "content": "a\x00b"}]}', b"\x00\x00", escaped]))
    rows = ingest(path, tmp_path=tmp_path)
    assert [reason.split(":")[0] for _, reason in dropped(rows)] == ["not_json", "not_json"]
    assert rows.filter(pl.col(DROP).is_null()).height == 2  # a \u0000 escape is text like any other
    stored_and_read_back(rows, tmp_path)


# --- the whole run -----------------------------------------------------------------------------------------------

def build(run_dir: Path, source: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.build", "ingest", "--run-dir", str(run_dir),
                           "--set", f"sources={source}"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


def test_a_hostile_directory_runs_to_the_end_with_every_record_accounted_for(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    bad_utf8 = [json.dumps(chat(i)).encode() for i in range(10)]
    bad_utf8[4] = bad_utf8[4].replace(b"Question 4?", b"Question \xff\xfe4?")
    (src / "utf8.jsonl").write_bytes(jsonl(bad_utf8))
    # closed and 100,000 deep: pyarrow's JSON reader would crash the process on it
    deep = '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}"
    (src / "deep.jsonl").write_bytes(jsonl([chat(0), deep.encode()]))
    (src / "turns.jsonl").write_bytes(jsonl([{"messages": turns(5000)}, chat(1)]))
    zst = COMPRESS["zst"](CONTENT["jsonl"])
    (src / "cut.jsonl.zst").write_bytes(zst[:len(zst) // 2])  # Alpaca records, then an unreadable rest
    os.symlink(".", src / "self")
    done = build(tmp_path / "run", src)
    assert done.returncode == 0, done.stderr[-2000:]
    stages = report(tmp_path / "run")
    quarantine = pl.read_parquet(tmp_path / "run" / "quarantine.parquet")
    assert stages["ingest"]["rows_in"] == stages["ingest"]["rows_out"] + quarantine.height
    assert sorted(r.split(":")[0] for r in quarantine["reason"]) == [
        "too_deep", "too_many_turns", "undecodable", "unreadable"]
    cut = len(list(read_records(src / "cut.jsonl.zst")))
    assert stages["ingest"]["rows_in"] == 10 + 2 + 2 + cut  # each file read once: the link to src added nothing
    assert stages["export"]["rows_out"] == stages["ingest"]["rows_out"]  # the next stages read every row
    loop = tmp_path / "loop.jsonl"
    os.symlink("loop.jsonl", loop)
    failed = build(tmp_path / "run2", loop)
    assert failed.returncode == 2 and failed.stderr.strip().count("\n") == 0
    assert "loop.jsonl is a symbolic link that loops" in failed.stderr
