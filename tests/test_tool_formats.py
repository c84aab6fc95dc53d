"""Tool-call formats read into the canonical schema: calls as `<tool_call>` lines, results as tool turns, the
tools offered as the `tools` column; a malformed call or definition quarantined with its file and line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from datasets import load_dataset

from pipelines.core.stage import DROP, Context
from pipelines.stages.ingest import Ingest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "tool_formats"
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "%s"}}\n</tool_call>'


def ingest(name: str, tmp_path: Path) -> pl.DataFrame:
    frames = list(Ingest(sources=(str(DATA / name),)).read(Context(run_dir=tmp_path, config=None)))
    return pl.concat(frames, how="diagonal_relaxed")


@pytest.mark.parametrize("name, fmt, roles, calls, bad_locator, bad_reason", [
    ("glaive.jsonl", "glaive", ["system", "user", "assistant", "tool", "assistant"], [CALL % "Oslo"],
     "glaive.jsonl:2", "bad_tool_call: chat turn 1 is not a JSON call"),
    ("xlam.jsonl", "xlam", ["user", "assistant"], [CALL % "Lima" + "\n" + CALL % "Quito"],
     "xlam.jsonl:2", "bad_tool_call: answers is not JSON"),
    ("hermes_function_calling.json", "sharegpt", ["system", "user", "assistant", "tool", "assistant"],
     [CALL % "Nairobi"], "hermes_function_calling.json:29", "bad_tool_call: conversations[1] <tool_call> 0 has no "
                                                          "function name"),
    ("sharegpt_function_call.json", "sharegpt", ["user", "assistant", "tool", "assistant"], [CALL % "Cairo"],
     "sharegpt_function_call.json:23", "bad_tool_call: conversations[1] is not a JSON call"),
    ("openai_tools.jsonl", "messages", ["user", "assistant", "tool", "assistant"], [CALL % "Lagos"],
     "openai_tools.jsonl:2", "bad_tool_call: messages[1].tool_calls[0] arguments are a list, not an object"),
])
def test_each_tool_format(tmp_path, name, fmt, roles, calls, bad_locator, bad_reason):
    rows = ingest(name, tmp_path)
    good, bad = rows.filter(pl.col(DROP).is_null()), rows.filter(pl.col(DROP).is_not_null())
    first = good.row(0, named=True)
    assert first["source"] == f"{fmt}:{name}"
    assert [m["role"] for m in first["messages"]] == roles
    assert [m["content"] for m in first["messages"] if m["content"].startswith("<tool_call>")] == calls
    tools = json.loads(first["tools"])
    assert tools[0]["type"] == "function" and tools[0]["function"]["name"] == "get_weather"
    assert tools[0]["function"]["parameters"]["properties"]["city"]["type"] == "string"
    assert "tools" not in json.loads(first["meta"])  # a column, not lost in meta
    assert bad.height == 1 and bad["locator"][0] == bad_locator and bad[DROP][0].startswith(bad_reason)


def test_xlam_parameters_become_json_schema(tmp_path):
    tools = json.loads(ingest("xlam.jsonl", tmp_path).filter(pl.col(DROP).is_null())["tools"][0])
    parameters = tools[0]["function"]["parameters"]
    assert parameters == {"type": "object", "required": ["city"], "properties": {
        "city": {"type": "string", "description": "the city"}, "units": {"type": "string", "description": "C or F"}}}


def test_glaive_record_without_functions_has_no_tools(tmp_path):
    rows = ingest("glaive.jsonl", tmp_path).filter(pl.col(DROP).is_null())
    joke = rows.filter(pl.col("messages").list.len() == 3).row(0, named=True)
    assert joke["tools"] is None and joke["messages"][0] == {"role": "system", "content": "You are a helpful assistant"}


def test_the_ingest_export_keeps_tools_as_a_column(tmp_path):
    run_dir = tmp_path / "run"
    sources = ",".join(str(DATA / n) for n in ("openai_tools.jsonl", "xlam.jsonl", "glaive.jsonl"))
    proc = subprocess.run([sys.executable, "-m", "pipelines.build", "ingest", "--run-dir", str(run_dir), "--set",
                           f"sources={sources}"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    dataset = load_dataset("parquet", data_files=str(run_dir / "export" / "data" / "*.parquet"))["train"]
    assert "tools" in dataset.column_names and dataset.num_rows == 4
    offered = [json.loads(t)[0]["function"]["name"] for t in dataset["tools"] if t]
    assert offered == ["get_weather"] * 3
    quarantine = pl.read_parquet(run_dir / "quarantine.parquet")
    assert sorted(quarantine["locator"].to_list()) == ["glaive.jsonl:2", "openai_tools.jsonl:2", "xlam.jsonl:2"]


def test_the_vectorised_jsonl_path_sends_tool_calls_record_by_record(tmp_path, monkeypatch):
    """ShareGPT JSONL with `function_call` turns and Hermes `<tool_call>` text: the fast path leaves those records to
    the record-by-record path (which checks and rewrites the calls), and the block comes out the same either way."""
    from connectors import sharegpt
    from connectors.json_text import jsonl_chunks
    from pipelines.stages import ingest as ingest_stage

    plain = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}
    called = {"conversations": [{"from": "human", "value": "Weather in Oslo?"},
                                {"from": "function_call", "value": '{"name": "get_weather", "arguments": '
                                                                   '{"city": "Oslo"}}'},
                                {"from": "observation", "value": '{"temperature_c": -3}'},
                                {"from": "gpt", "value": "-3 degrees."}]}
    hermes = {"conversations": [{"from": "human", "value": "Weather in Rome?"},
                                {"from": "gpt", "value": "<tool_call>\n{'arguments': {'city': 'Rome'}, 'name': "
                                                         "'get_weather'}\n</tool_call>"}]}
    source = tmp_path / "mixed.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in (plain, called, hermes, plain)) + "\n")
    [block] = list(jsonl_chunks(source, 1 << 20))
    task = (sharegpt, "conversation", "sharegpt:mixed.jsonl", "mixed.jsonl", block)
    fast = ingest_stage._convert_block(*task)
    monkeypatch.setattr(ingest_stage, "fast_frame", lambda *a, **k: None)
    assert fast.equals(ingest_stage._convert_block(*task))
    contents = [m[1]["content"] for m in fast["messages"].to_list()]
    assert contents[1] == CALL % "Oslo" and contents[2] == CALL % "Rome"
