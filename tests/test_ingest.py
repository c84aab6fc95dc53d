"""The ingest recipe end to end (real files, real Parquet, real `datasets` loads), redaction, and the quarantine."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import polars as pl
import pytest

from conftest import ROOT, report
from pipelines.core.quarantine import write_quarantine
from pipelines.core.stage import DROP, Context
from pipelines.stages.ingest import Ingest
from pipelines.stages.redact import Redact
from schemas import QUARANTINE, conversation_id

DATA = Path(__file__).parent / "data" / "ingest"
REAL = ROOT.parent / "shared" / "data" / "real"


def ingest(*sources: str, kind: str = "conversation", tmp_path: Path) -> tuple[pl.DataFrame, Context]:
    ctx = Context(run_dir=tmp_path, config=None)
    frames = list(Ingest(sources=sources, kind=kind).read(ctx))
    return pl.concat(frames, how="diagonal_relaxed"), ctx


def run(run_dir: Path, *sets: str, recipe: str = "ingest") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipelines.build", recipe, "--run-dir", str(run_dir)]
    for item in sets:
        cmd += ["--set", item]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


def test_redaction_replaces_with_typed_placeholders_and_counts(tmp_path):
    rows, ctx = ingest(str(DATA / "chat_log.jsonl"), tmp_path=tmp_path)
    kept = rows.filter(pl.col(DROP).is_null()).drop(DROP, "locator", "raw")
    out = Redact().process(kept, ctx)
    texts = [[m["content"] for m in ms] for ms in out["messages"].to_list()]
    assert texts == [
        ["My email is <EMAIL>, call me at <PHONE>.", "Noted. Your server <IP_ADDRESS> is fine."],
        ["Is this key safe? <SECRET_OPENAI_KEY>",
         "No: revoke it. Also use Authorization: Bearer <SECRET_BEARER_TOKEN> only over TLS."],
    ]
    assert dict(ctx.counters) == {"redacted_email": 1, "redacted_phone": 1, "redacted_ip_address": 1,
                                  "redacted_openai_key": 1, "redacted_bearer_token": 1}
    assert out["id"].to_list() == [conversation_id(ms) for ms in out["messages"].to_list()]
    assert out["id"].to_list() != kept["id"].to_list()


@pytest.mark.parametrize("scope, redacted_sources", [("chat_logs", {"sharegpt"}), ("all", {"sharegpt", "alpaca"}),
                                                     ("none", set())])
def test_redaction_scope(tmp_path, scope, redacted_sources):
    rows, ctx = ingest(str(DATA / "chat_log.jsonl"), str(DATA / "instructions.json"), tmp_path=tmp_path)
    kept = rows.filter(pl.col(DROP).is_null()).drop(DROP, "locator", "raw")
    out = Redact(scope=scope).process(kept, ctx)
    changed = {src.split(":")[0] for src, a, b in zip(out["source"], out["messages"].to_list(), kept["messages"].to_list()) if a != b}
    assert changed == redacted_sources


def test_secrets_of_the_common_providers_are_redacted(tmp_path):
    secrets = {
        "anthropic_key": "sk-ant-api03-" + "a1B2" * 10,
        "aws_key": "AKIAIOSFODNN7EXAMPLE",
        "github_token": "ghp_" + "x" * 36,
        "google_key": "AIza" + "S" * 35,
        "slack_token": "xoxb-123456789012-abcdefABCDEF",
        "hf_token": "hf_" + "q" * 34,
        "stripe_key": "sk_live_" + "4" * 24,
        "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "private_key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
    }
    source = tmp_path / "log.jsonl"
    source.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"here: {value} ok"},
                                                       {"role": "assistant", "content": "thanks"}]}) + "\n"
                              for value in secrets.values()))
    rows, ctx = ingest(str(source), tmp_path=tmp_path)
    out = Redact().process(rows.drop(DROP, "locator", "raw"), ctx)
    firsts = [ms[0]["content"] for ms in out["messages"].to_list()]
    for (name, value), text in zip(secrets.items(), firsts):
        assert value not in text and text.startswith("here: <") and text.endswith("> ok"), (name, text)
    assert {k: v for k, v in ctx.counters.items()} == {f"redacted_{name}": 1 for name in secrets}


def test_ingest_recipe_quarantines_redacts_exports_and_resumes(tmp_path):
    run_dir = tmp_path / "run"
    sources = f"sources={DATA / 'chat_log.jsonl'},{DATA / 'instructions.json'}"
    proc = run(run_dir, sources)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "quarantine.parquet (2 rows)" in proc.stdout

    quarantine = pl.read_parquet(run_dir / "quarantine.parquet")
    assert quarantine.schema.names() == QUARANTINE.names
    assert quarantine.select("stage", "source", "locator").rows() == [
        ("00_ingest", "sharegpt:chat_log.jsonl", "chat_log.jsonl:3"),
        ("00_ingest", "sharegpt:chat_log.jsonl", "chat_log.jsonl:4"),
    ]
    reasons = quarantine["reason"].to_list()
    assert reasons[0].startswith("not_json: ") and reasons[1].startswith("turn_order: turns do not alternate")
    assert quarantine["raw"][0] == '{"id": "broken", "conversations": ['
    assert json.loads(quarantine["raw"][1])["id"] == "a3"

    stages = report(run_dir)
    assert stages["ingest"]["rows_out"] == 4 and stages["ingest"]["dropped"] == {"not_json": 1, "turn_order": 1}
    assert stages["ingest"]["counters"]["redacted_email"] == 1  # the chat log only: alpaca rows are not a chat log
    ds = datasets.load_dataset(str(run_dir / "export"), cache_dir=str(tmp_path / "hf"))
    assert ds["train"].num_rows == 4 and set(ds["train"].column_names) == {"id", "messages", "source", "meta", "tools"}
    assert ds["train"]["source"] == ["sharegpt:chat_log.jsonl"] * 2 + ["alpaca:instructions.json"] * 2
    assert ds["train"][2]["messages"] == [  # not a chat log: left as it is
        {"role": "user", "content": "Write to support@example.org and ask for a refund."},
        {"role": "assistant", "content": "Dear support, ..."}]
    assert ds["train"][0]["messages"][0]["content"] == "My email is <EMAIL>, call me at <PHONE>."
    assert json.loads(ds["train"][0]["meta"])["locator"] == "chat_log.jsonl:1"

    again = run(run_dir, sources)
    assert again.returncode == 0 and all(row["status"] == "skipped" for row in
                                         json.loads((run_dir / "report.json").read_text())["stages"])

    # A changed input file is read again.
    changed = tmp_path / "chat_log.jsonl"
    shutil.copy(DATA / "chat_log.jsonl", changed)
    with open(changed, "a") as f:
        f.write(json.dumps({"conversations": [{"from": "human", "value": "new?"}, {"from": "gpt", "value": "yes"}]})
                + "\n")
    third = run(run_dir, f"sources={changed},{DATA / 'instructions.json'}")
    assert third.returncode == 0, third.stderr[-2000:]
    assert report(run_dir)["ingest"]["status"] == "ran" and report(run_dir)["export"]["rows_out"] == 5


def test_preference_kind_exports_pairs_trl_can_read(tmp_path):
    source = tmp_path / "hh.jsonl.gz"
    pairs = [("What is 2+2?", "4.", "5."), ("Name a color.", "Blue.", "Blue.")]
    with gzip.open(source, "wt") as f:
        for q, good, bad in pairs:
            f.write(json.dumps({"chosen": f"\n\nHuman: {q}\n\nAssistant: {good}",
                                "rejected": f"\n\nHuman: {q}\n\nAssistant: {bad}"}) + "\n")
    run_dir = tmp_path / "run"
    proc = run(run_dir, f"sources={source}", "kind=preference")
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = datasets.load_dataset(str(run_dir / "export"), cache_dir=str(tmp_path / "hf"))
    assert sorted(loaded) == ["train_gen", "train_prefs", "train_sft"]
    ds = loaded["train_prefs"]
    assert ds.num_rows == 1
    row = ds[0]
    assert row["prompt"] == "What is 2+2?"
    assert row["chosen"] == [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."}]
    assert row["rejected"][-1] == {"role": "assistant", "content": "5."} and row["messages"] == row["chosen"]
    reasons = pl.read_parquet(run_dir / "quarantine.parquet")["reason"].to_list()
    assert len(reasons) == 1 and reasons[0].startswith("identical:")


def test_hh_rlhf_helpsteer_and_oasst_pairs_export_in_one_preference_shape(tmp_path):
    """The three human-preference formats land in the ultrafeedback_binarized shape the DPO trainer reads."""
    formats = Path(__file__).parent / "data" / "formats"
    sources = ",".join(str(formats / f) for f in ("hh_rlhf.jsonl", "helpsteer.jsonl", "oasst.jsonl"))
    proc = run(tmp_path / "run", f"sources={sources}", "kind=preference")
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = datasets.load_dataset(str(tmp_path / "run" / "export"), cache_dir=str(tmp_path / "hf"))
    assert {"train_prefs", "train_sft", "train_gen"} <= set(loaded)
    for split in loaded.values():
        assert split.column_names[:7] == ["prompt", "prompt_id", "chosen", "rejected", "messages", "score_chosen",
                                          "score_rejected"]
    pairs = pl.read_parquet(tmp_path / "run" / "export" / "data" / "*_prefs-*.parquet")
    assert pairs.height == 4  # 2 hh-rlhf, 1 HelpSteer, 1 OpenAssistant pair (as ingest converts them)
    for chosen, rejected, prompt in pairs.select("chosen", "rejected", "prompt").iter_rows():
        assert chosen[:-1] == rejected[:-1] and chosen[-1]["role"] == rejected[-1]["role"] == "assistant"
        assert chosen[-2] == {"role": "user", "content": prompt} and chosen[-1] != rejected[-1]


def test_mixture_weights_and_caps_keep_provenance(tmp_path):
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({"instruction": f"Task {i}?", "input": "", "output": f"Answer {i}."}) + "\n"
                           for i in range(400)))
    rows, ctx = ingest(f"{big}?weight=0.25", f"{big}?max_rows=7", str(DATA / "instructions.json"),
                       tmp_path=tmp_path)
    kept = rows.filter(pl.col(DROP).is_null())
    counts = kept.group_by("source").len().sort("source").rows()
    sampled = counts[0][1] - 7
    assert 70 <= sampled <= 130 and ctx.counters["not_sampled"] == 400 - sampled
    again, _ = ingest(f"{big}?weight=0.25", tmp_path=tmp_path)
    assert again.height == sampled  # the same records every time
    capped = kept.filter(pl.col("meta").str.contains('"locator":"big.jsonl:[1-7]"'))
    assert capped.height >= 7
    assert ("alpaca:instructions.json", 2) in counts


def test_bad_sources_are_one_line_errors_naming_the_file(tmp_path):
    missing = run(tmp_path / "a", f"sources={tmp_path / 'nope.jsonl'}")
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0
    assert "nope.jsonl" in missing.stderr
    wrong_kind = run(tmp_path / "b", f"sources={DATA / 'chat_log.jsonl'}", "kind=preference")
    assert wrong_kind.returncode == 2 and "chat_log.jsonl is sharegpt data" in wrong_kind.stderr
    unknown = tmp_path / "odd.jsonl"
    unknown.write_text('{"foo": 1, "bar": 2}\n')
    odd = run(tmp_path / "c", f"sources={unknown}")
    assert odd.returncode == 2 and "cannot tell the format of" in odd.stderr and "odd.jsonl" in odd.stderr


def test_quarantine_gathers_drops_of_every_stage(tmp_path):
    (tmp_path / "00_ingest").mkdir()
    pl.DataFrame({"source": ["s"], DROP: ["not_json: x"], "locator": ["f.jsonl:2"], "raw": ["{"]}).write_parquet(
        tmp_path / "00_ingest" / "dropped.parquet")
    (tmp_path / "03_validate").mkdir()
    pl.DataFrame({"id": ["abc", "def"], "source": ["sharegpt:f.jsonl"] * 2, "n": [3, 4],
                  "meta": ['{"locator": "f.jsonl:7"}', '{"seed_id": "s1"}'],
                  DROP: ["schema: bad", "refusal: x"]}).write_parquet(tmp_path / "03_validate" / "dropped.parquet")
    path, n = write_quarantine(tmp_path)
    rows = pl.read_parquet(path).rows()
    assert n == 3 and rows == [  # the input's file:line from meta; a generated row names its stage and prompt
        ("00_ingest", "s", "f.jsonl:2", "not_json: x", "{"),
        ("03_validate", "sharegpt:f.jsonl", "f.jsonl:7", "schema: bad",
         '{"id":"abc","source":"sharegpt:f.jsonl","n":3,"meta":{"locator": "f.jsonl:7"}}'),
        ("03_validate", "sharegpt:f.jsonl", "03_validate:s1", "refusal: x",
         '{"id":"def","source":"sharegpt:f.jsonl","n":4,"meta":{"seed_id": "s1"}}')]


# Every real file, auto-detected: (kind, rows kept, rows quarantined by reason category).
REAL_EXPECTED = {
    "alpaca_eval_example_outputs.json": ("conversation", "alpaca", 805, {}),
    "gpteacher_roleplay_alpaca_format.json": ("conversation", "alpaca", 600, {}),
    "gsm8k_test.jsonl": ("conversation", "qa", 1319, {}),
    "hh_rlhf_harmless_base_test.jsonl.gz": ("preference", "hh_rlhf", 2299,
                                            {"schema": 4, "turn_order": 4, "prompt_mismatch": 5}),
    "self_instruct_seed_tasks.jsonl": ("conversation", "self_instruct", 175, {}),
    "sharegpt_dummy_conversation.json": ("conversation", "sharegpt", 500, {}),
}


def test_every_real_file_ingests_by_auto_detection(tmp_path):
    assert REAL.is_dir(), f"{REAL} is missing: CI runs with ../shared beside the repository"
    assert sorted(p.name for p in REAL.iterdir()) == sorted(REAL_EXPECTED)
    for name, (kind, fmt, ok, bad) in REAL_EXPECTED.items():
        rows, _ = ingest(str(REAL / name), kind=kind, tmp_path=tmp_path)
        kept = rows.filter(pl.col(DROP).is_null())
        dropped = rows.filter(pl.col(DROP).is_not_null())[DROP].str.split(":").list.first().value_counts()
        assert (kept.height, dict(dropped.rows())) == (ok, bad), name
        assert set(kept["source"]) == {f"{fmt}:{name}"}


def test_vectorised_blocks_give_the_same_rows_as_record_by_record(tmp_path, monkeypatch):
    """`ingest_fast` must agree with the record-by-record path row for row: ids, messages, meta, drop reasons."""
    from connectors import sharegpt
    from connectors.json_text import jsonl_chunks
    from pipelines.stages import ingest as ingest_stage

    source = tmp_path / "mixed.jsonl"
    lines = [json.dumps({"id": f"r{i}", "conversations": [{"from": "human", "value": f"Question {i}? é \u2028 \"q\""},
                                                          {"from": "gpt", "value": f"Answer {i}.\n\tdone"}]})
             for i in range(50)]
    lines[3] = json.dumps({"id": "bad-role", "conversations": [{"from": "wizard", "value": "x"},
                                                               {"from": "gpt", "value": "y"}]})
    lines[7] = json.dumps({"id": "spaces", "conversations": [{"from": "human", "value": "\x1c "},
                                                             {"from": "gpt", "value": "y"}]})
    lines[9] = json.dumps({"id": "order", "conversations": [{"from": "gpt", "value": "x"},
                                                            {"from": "human", "value": "y"}]})
    lines[11] = json.dumps({"id": "sys", "conversations": [{"from": "system", "value": "Be kind."},
                                                           {"from": "human", "value": "hi"},
                                                           {"from": "gpt", "value": "hello"}]})
    source.write_text("\n".join(lines) + "\n")
    [block] = list(jsonl_chunks(source, 1 << 20))
    task = (sharegpt, "conversation", "sharegpt:mixed.jsonl", "mixed.jsonl", block)
    fast = ingest_stage._convert_block(*task)
    monkeypatch.setattr(ingest_stage, "fast_frame", lambda *a, **k: None)
    slow = ingest_stage._convert_block(*task)
    assert fast.equals(slow), (fast.head(2).to_dicts(), slow.head(2).to_dicts())
    reasons = fast[DROP].drop_nulls().to_list()
    assert len(reasons) == 3 and reasons[0].startswith("unknown_role")
