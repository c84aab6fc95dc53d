"""Tool calling on a tool_use export's held-out requests (`--tools-export DIR`, its `test_sft`): the model is asked,
as the recipe asks its teacher, for the first calls a request needs (JSON constrained to the offered tools), and
scored as BFCL scores calls: by AST match (the same function names with the same arguments, in any order; no call
where the reference made none) and, for the shipped tools, by execution match (the calls' results equal the
reference calls' results, run in the sandbox)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from pipelines.core.errors import ConfigError

NAME = "tool_calls"
ABOUT = "tool calls on a tool_use export's test_sft requests: AST match of names and arguments, and execution match"
DEFAULT_LIMIT = 200


def items(limit: int | None, options: dict | None = None) -> list[dict]:
    import polars as pl

    export = (options or {}).get("tools_export")
    if export is None:
        raise ConfigError("the tool_calls suite reads a tool_use export's test_sft: give --tools-export DIR")
    files = sorted((Path(export) / "data").glob("test_sft-*.parquet"))
    if not files:
        raise ConfigError(f"{export} has no data/test_sft-*.parquet: give a tool_use export")
    rows = pl.read_parquet(files, columns=["prompt_id", "prompt", "tools", "messages", "kind", "domain",
                                           "simulated"]).to_dicts()
    return [{"id": r["prompt_id"], "request": r["prompt"], "tools": json.loads(r["tools"]), "kind": r["kind"],
             "domain": r["domain"], "simulated": r["simulated"], "reference": first_calls(r["messages"])}
            for r in rows[:limit]]


def first_calls(messages: list[dict]) -> list[dict]:
    """The calls of the first assistant turn: [{"name", "arguments"}] (none when it answered directly)."""
    turn = next((m for m in messages if m["role"] == "assistant"), None)
    return [{"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
            for c in (turn or {}).get("tool_calls") or []]


def ast_match(calls: list[dict], reference: list[dict]) -> bool:
    from pipelines.tools.chat import call_key

    def keys(found):
        return Counter(call_key(c.get("name"), c.get("arguments")) for c in found)

    return keys(calls) == keys(reference)


def prompt_of(item: dict) -> str:
    return item["request"]


def run(rows: list[dict], ctx) -> list[dict]:
    from pipelines.prompts import tool_use as T
    from pipelines.teacher.wire import Request

    out = [dict(r) for r in rows]
    requests = [Request(T.decide_messages(r["tools"], r["request"], []), {"max_tokens": 256, "temperature": 0.0,
                                                                          "seed": 0}, schema=T.calls_schema(r["tools"]))
                for r in rows]
    for prefix, model in {"": ctx.model, "baseline_": ctx.baseline}.items():
        if model is None:
            continue
        for row, result in zip(out, ctx.generate(model, requests, f"tool_calls {prefix or 'model'}")):
            calls = T.calls_of(result.data) or []
            row[f"{prefix}calls"] = calls
            row[f"{prefix}score"] = float(ast_match(calls, row["reference"]))
            row[f"{prefix}verdict"] = "match" if row[f"{prefix}score"] else "no call" if not calls else "mismatch"
    execution_scores(out)
    return out


def execution_scores(rows: list[dict]) -> None:
    """`exec_score` (and `baseline_exec_score`): whether the calls' results equal the reference's, for the shipped
    tools (a user's tools file is not known here, and a simulated result cannot be run again: None)."""
    from pipelines.tools import library_files
    from pipelines.tools.sandbox import Sandbox
    from pipelines.tools.validate import CallError, check_arguments, find_tool

    shipped = library_files()
    for domain in {r["domain"] for r in rows if r["domain"] in shipped}:
        with Sandbox(shipped[domain]) as box:
            def results(calls, tools):
                try:
                    checked = [(c["name"], check_arguments(find_tool(tools, c["name"]), c["arguments"])) for c in calls]
                except CallError:
                    return None
                return Counter(json.dumps(o.result if o.ok else o.status, sort_keys=True) for o in box.run(checked))

            for row in (r for r in rows if r["domain"] == domain and not r["simulated"]):
                expected = results(row["reference"], row["tools"])
                for prefix in ("", "baseline_"):
                    if f"{prefix}calls" in row:
                        got = results(row[f"{prefix}calls"], row["tools"])
                        row[f"{prefix}exec_score"] = float(got is not None and got == expected)


def summary(rows: list[dict]) -> dict:
    executed = [r["exec_score"] for r in rows if r.get("exec_score") is not None]
    kinds = sorted({r["kind"] for r in rows})
    return {"execution_accuracy": round(sum(executed) / len(executed), 4) if executed else None,
            "ast_by_kind": {k: round(sum(r["score"] for r in rows if r["kind"] == k and "score" in r) /
                                     max(1, sum(1 for r in rows if r["kind"] == k)), 4) for k in kinds}}
