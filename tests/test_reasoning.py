"""Final answers read by rule, and the reasoning recipe's rejection sampling on the embedded teacher."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import datasets
import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import ROOT, report, run_build  # noqa: E402
from pipelines.prompts.reasoning import Reference, agrees, final_answer, reference_of  # noqa: E402

GSM8K = ROOT.parent / "shared" / "data" / "real" / "gsm8k_test.jsonl"


@pytest.mark.parametrize("reference, kind, value", [
    ("She sells 16 - 3 - 4 = 9 eggs.\n#### 18", "number", "18"),
    ("#### 1,250", "number", "1,250"),
    ("42", "number", "42"),
    ("So the area is $\\boxed{\\dfrac{3}{4}}$.", "boxed", "\\dfrac{3}{4}"),
    ("(B)", "choice", "B"),
    ("Answer: d", "choice", "D"),
    ("The capital of France is Paris.", None, None),
])
def test_the_form_of_a_reference(reference, kind, value):
    found = reference_of(reference)
    assert (found.kind, found.value) == (kind, value) if kind else found is None


@pytest.mark.parametrize("answer, kind, reference, right", [
    ("16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\n#### 18", "number", "18", True),
    ("She earns $18 a day. The answer is $18.", "number", "18", True),
    ("The final answer is: **1,250 dollars**", "number", "1250", True),
    ("Half of 3 is 3/2, so 1.5 cups.", "number", "1.5", True),
    ("So we get 17.\n#### 17", "number", "18", False),
    ("I am not sure how to solve this.", "number", "18", False),
    ("Thus the answer is $\\boxed{\\frac{3}{4}}$.", "boxed", "\\dfrac{3}{4}", True),
    ("Thus \\boxed{0.75}", "boxed", "3/4", True),
    ("Thus \\boxed{\\left( 1, 2 \\right)}", "boxed", "(1,2)", True),
    ("Thus \\boxed{x+1}", "boxed", "x+2", False),
    ("Looking at each option, the answer is (C).", "choice", "C", True),
    ("Answer: B", "choice", "C", False),
    ("A is wrong and so is B.\nC", "choice", "C", True),
])
def test_final_answers_are_read_and_compared(answer, kind, reference, right):
    assert agrees(final_answer(answer, kind), Reference(kind, reference)) is right


def test_every_gsm8k_reference_is_read_and_agrees_with_itself():
    rows = [json.loads(line) for line in GSM8K.open()]
    refs = [reference_of(r["answer"]) for r in rows]
    assert len(rows) > 1000 and all(ref is not None and ref.kind == "number" for ref in refs)
    assert all(agrees(final_answer(r["answer"], "number"), ref) for r, ref in zip(rows, refs))
    wrong = Reference("number", str(int(refs[0].value.replace(",", "")) + 1))
    assert not agrees(final_answer(rows[0]["answer"], "number"), wrong)


# SmolLM2-135M answers 7 of these 15 samples right here (each of the 5 at least once); GSM8K's problems it may never
# solve, which left nothing exported to check.
EASY = [("What is 2 + 3?", 5), ("What is 4 + 4?", 8), ("What is 10 - 3?", 7), ("What is 2 times 3?", 6),
        ("What is 1 + 1?", 2)]


def test_the_reasoning_build_keeps_only_verified_answers(tmp_path, teacher_server):
    run_dir = tmp_path / "reasoning"
    easy = tmp_path / "easy.jsonl"
    easy.write_text("".join(json.dumps({"question": q, "answer": f"So the answer is {a}.\n#### {a}"}) + "\n"
                            for q, a in EASY))
    run_build(run_dir, f"sources={easy},{GSM8K}?max_rows=1", "samples=3", "keep=2", "sampling.max_tokens=96",
              server=teacher_server, recipe="reasoning")
    stages = report(run_dir)
    verify, kept = stages["verify"], stages["keep_verified"]
    assert verify["rows_in"] == verify["rows_out"] == kept["rows_in"] == 6 and not verify["dropped"]
    assert kept["rows_out"] + sum(kept["dropped"].values()) == 18  # every sampled answer, kept or quarantined
    summary = json.loads((run_dir / "report.json").read_text())
    found = next(s["summary"]["verification"] for s in summary["stages"] if s["stage"].endswith("verify"))
    assert found["prompts"] == 6 and 0 < found["pass@1"] <= found["pass@3"] <= 1  # it solves some: rows to check
    quarantine = pl.read_parquet(run_dir / "quarantine.parquet").filter(pl.col("stage").str.ends_with("keep_verified"))
    for reason, raw in zip(quarantine["reason"], quarantine["raw"]):
        row = json.loads(raw)
        assert reason.split(":")[0] in ("wrong_answer", "no_answer", "surplus_correct", "request_failed")
        if reason.startswith("wrong_answer"):
            assert not row["verified"] and f"expected {row['reference_answer']}" in reason
    card = (run_dir / "export" / "README.md").read_text()
    assert "over 6 prompts" in card
    rows = datasets.load_dataset(str(run_dir / "export"), cache_dir=str(tmp_path / "hf"))
    exported = [r for split in rows.values() for r in split]
    assert len(exported) == kept["rows_out"] == stages["validate"]["rows_out"] > 0
    for row in exported:
        assert row["verified"] and agrees(final_answer(row["messages"][1]["content"], "number"),
                                          Reference("number", row["reference_answer"]))
    per_prompt = Counter(row["messages"][0]["content"] for row in exported)
    assert max(per_prompt.values()) <= 2  # keep=2
    assert len(per_prompt) == round(found["pass@3"] * 6)  # every solved prompt exported, no other


def test_orca_answers_are_checked_against_the_reference_in_meta(tmp_path, teacher_server):
    run_dir = tmp_path / "orca"
    run_build(run_dir, f"sources={GSM8K}?max_rows=5", "verify=true", "sampling.max_tokens=96",
              server=teacher_server, recipe="orca")
    stages = report(run_dir)
    check = stages["check_answers"]
    assert stages["answer"]["rows_in"] == 5 and check["rows_in"] == stages["answer"]["rows_out"]
    assert set(check["dropped"]) <= {"wrong_answer", "no_answer"}
    quarantine = pl.read_parquet(run_dir / "quarantine.parquet").filter(pl.col("stage").str.contains("check"))
    for reason, raw in zip(quarantine["reason"], quarantine["raw"]):
        meta = json.loads(raw)["meta"]  # the quarantine writes a JSON meta out as an object
        expected = reference_of((json.loads(meta) if isinstance(meta, str) else meta)["reference"]).value
        assert reason.startswith("no_answer") or reason.endswith(f"expected {expected}")
