"""The verified_if recipe on the embedded SmolLM2: constrained prompts, every sampled answer checked by IFEval's
checkers, exported pairs that pass against pairs that fail (re-checked here), base instructions from an eval set
removed, and the card's pass rates."""

from __future__ import annotations

import json

import polars as pl

from conftest import report, run_build
from pipelines.prompts.following import check
from pipelines.eval.suites import ifbench


def test_verified_if_pairs_answers_that_pass_every_check_with_ones_that_fail(tmp_path):
    leaked = ifbench.items(1)[0]["prompt"]
    bases = ["Name three primary colours and say where each appears in nature.",
             "Describe how a bicycle gear works.", "Give two tips for writing a clear email.", leaked]
    source = tmp_path / "bases.jsonl"
    source.write_text("".join(json.dumps({"text": b}) + "\n" for b in bases))
    run_build(tmp_path / "run", f"sources={source}", "prompt_kind=text", "variants=3", "samples=4",
              "sampling.max_tokens=96", recipe="verified_if")
    stages = report(tmp_path / "run")
    assert stages["decontaminate"]["dropped"] == {"contaminated": 1}  # the IFBench prompt, found by its base
    assert stages["constrain"]["rows_out"] == 9 and stages["check"]["rows_in"] == 9
    verification = stages["check"]["summary"]["verification"]
    assert verification["samples_per_prompt"] == 4 and 0 <= verification["pass@1"] <= verification["pass@4"] <= 1
    assert verification["by_instruction"] and all(0 <= v <= 1 for v in verification["by_instruction"].values())
    dropped = stages["check"]["dropped"]
    assert set(dropped) <= {"no_verified_answer"} and stages["check"]["rows_out"] + sum(dropped.values()) == 9
    assert round(verification["pass@4"] * 9) == stages["check"]["rows_out"] > 0
    prompts = pl.read_parquet(tmp_path / "run" / "04_constrain" / "part-*.parquet")
    for row in prompts.iter_rows(named=True):
        meta = json.loads(row["meta"])
        assert row["prompt"].startswith(meta["base"]) and 1 <= len(meta["instruction_id_list"]) <= 3
    pairs = pl.concat([pl.read_parquet(f) for f in (tmp_path / "run" / "export" / "data").glob("*_prefs-*.parquet")])
    for row in pairs.iter_rows(named=True):  # re-checked: chosen follows every instruction, rejected misses one
        meta = json.loads(prompts.filter(pl.col("prompt_id") == row["prompt_id"])["meta"][0])
        item = {"prompt": row["prompt"], **meta}
        assert all(check(row["chosen"][-1]["content"], item, "ifeval")[0]) and row["score_chosen"] == 1.0
        assert not all(check(row["rejected"][-1]["content"], item, "ifeval")[0]) and row["score_rejected"] < 1.0
    card = (tmp_path / "run" / "export" / "README.md").read_text()
    assert "| instruction | pass rate |" in card and f"pass@4 {verification['pass@4']:.3f} over 9 prompts" in card


def test_a_build_whose_checks_drop_every_prompt_says_so_in_one_line(tmp_path):
    source = tmp_path / "bases.jsonl"
    source.write_text(json.dumps({"text": "Describe how a bicycle gear works."}) + "\n")
    proc = run_build(tmp_path / "run", f"sources={source}", "prompt_kind=text", "variants=1", "samples=2",
                     "sampling.max_tokens=2", recipe="verified_if")  # two tokens follow no instruction
    assert "warning: the export holds no rows (05_check dropped all 1: no_verified_answer 1)" in proc.stderr
    assert not list((tmp_path / "run" / "export" / "data").glob("*.parquet"))
