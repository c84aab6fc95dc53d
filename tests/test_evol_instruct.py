"""Evol-Instruct: each elimination rule on hand-made text, the lineage a real run leaves, resume and rerun."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import datasets
import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import ROOT, build_cmd, kill_after_first_part, report, run_build  # noqa: E402
from pipelines.core.runner import rebatch  # noqa: E402
from pipelines.prompts import evol_instruct as E  # noqa: E402
from pipelines.stages.evol_instruct import Evolve  # noqa: E402

ALPACA = ROOT / "tests" / "data" / "formats" / "alpaca.json"
PARENT = "Write a short poem about the sea."


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    ("Rewrite the given prompt so that it asks for a sonnet about the sea.", "template_copy"),
    ("Given the prompt above, write a sonnet about the sea.", "template_copy"),
    ("#Rewritten Prompt#: write a sonnet", "template_copy"),
    ("... and the, of it? (To be or not to be.)", "no_content"),
    ("write a short poem about THE SEA!", "no_gain"),
    ("Certainly! Here is a short poem about the sea: waves on waves.", "answered"),
    ("Write a poem about the sea " + "with waves " * 120, "too_long"),
    ("Write a sonnet about the sea at night, in iambic pentameter, naming three stars.", None),
])
def test_each_instruction_rule(text, reason):
    got = E.instruction_problem(text, PARENT, max_words=200, cut=False)
    assert (got.split(":")[0] if got else None) == reason, got


def test_a_rewrite_cut_by_max_tokens_is_eliminated():
    assert E.instruction_problem("Write a sonnet about the sea at night and", PARENT, 200, cut=True).startswith(
        "truncated")


@pytest.mark.parametrize("answer, reason", [
    ("I'm sorry, but I can't write poems about the sea.", "answer_sorry"),
    ("Sorry, that is too hard for me to do well.", "answer_sorry"),
    ("Waves roll in.", "answer_brief"),
    ("No.", "answer_no_content"),
    ("It is what it is, and that is all there is to it.", "answer_no_content"),
    ("Please provide the table of reviews so that I can label each one.", "answer_asks_input"),
    ("The tide comes in. The tide comes in. The tide comes in. The tide comes in.", "answer_loops"),
    ("Silver light on the water, the night tide hums its old song; three stars keep watch over the quiet harbour.",
     None),
    # 'sorry' in a long answer is not a refusal (the paper's rule asks for both)
    ("Sorry is a word the sailor never said. " + " ".join(f"Wave {k} carried a secret he could not tell." for k in
                                                          range(12)), None),
])
def test_each_answer_rule(answer, reason):
    got = E.answer_problem(answer, min_words=8)
    assert (got.split(":")[0] if got else None) == reason, got


@pytest.mark.parametrize("raw, clean", [
    ("#Rewritten Prompt#: Write a sonnet.", "Write a sonnet."),
    ("**Rewritten Prompt:** \"Write a sonnet.\"", "Write a sonnet."),
    ("#Created Prompt#:\nDescribe a lighthouse.", "Describe a lighthouse."),
    ("Write a sonnet about the rewritten prompt.", "Write a sonnet about the rewritten prompt."),  # left to the rule
])
def test_the_answer_label_is_taken_off(raw, clean):
    assert E.clean_rewrite(raw)[0] == clean


def test_judge_answers_are_read_strictly():
    assert E.is_equal({"difference": "nothing", "judgement": "Equal"}) is True
    assert E.is_equal({"judgement": "Not Equal"}) is False
    assert E.is_equal({"judgement": "equal-ish"}) is None and E.is_equal("Equal") is None


def test_operations_are_drawn_per_root_and_round_the_same_on_every_run():
    stage = Evolve(seed=3)
    draws = [stage.operation(f"root{k}", r) for k in range(60) for r in (1, 2, 3)]
    assert draws == [Evolve(seed=3).operation(f"root{k}", r) for k in range(60) for r in (1, 2, 3)]
    assert set(draws) == set(E.OPERATIONS)  # every operation comes up
    assert {Evolve(operations=("deepen",)).operation(f"r{k}", 1) for k in range(20)} == {"deepen"}
    for op in E.OPERATIONS:  # every operation's request names the instruction
        assert PARENT in E.evolve_request(op, PARENT)[-1]["content"]


def test_a_batch_never_splits_a_group():
    frames = [pl.DataFrame({"g": list("aab")}), pl.DataFrame({"g": list("bbbc")}), pl.DataFrame({"g": list("cd")})]
    batches = [b["g"].to_list() for b in rebatch(iter(frames), 2, group="g")]
    assert sum(batches, []) == list("aabbbbccd")
    assert all(len(set(b) & set(c)) == 0 for b, c in zip(batches, batches[1:])), batches
    assert [b["g"].to_list() for b in rebatch(iter(frames), 2)][0] == ["a", "a"]


def test_unknown_operations_are_refused(tmp_path):
    proc = run_build(tmp_path / "evol", "operations=deepen,widen", recipe="evol_instruct", check=False)
    assert proc.returncode == 2 and "widen" in proc.stderr and "Traceback" not in proc.stderr


def evol_sets(server, *more):
    judge = (f"judge.base_url={server.base_url}", f"judge.model={server.model}")
    return (f"sources={ALPACA}", "rounds=2", "sampling.max_tokens_answer=64", *judge, *more)


def requests_in(run_dir: Path) -> int:
    with sqlite3.connect(run_dir / "requests.sqlite") as db:
        return db.execute("SELECT count(*) FROM responses").fetchone()[0]


def test_evol_instruct_build_exports_evolved_rows_with_their_lineage(tmp_path, teacher_server):
    run_dir = tmp_path / "evol"
    # the Alpaca fixture's 3 good records and 6 seed tasks: enough evolutions survive elimination for the selection
    # to have two kept rows to draw distances between (3 roots alone left 1 in two of four runs today)
    sources = f"sources={ALPACA},{ROOT / 'pipelines' / 'data' / 'seed_tasks.jsonl'}?max_rows=6"
    run_build(run_dir, *evol_sets(teacher_server, sources, "select.enabled=true", "select.min_distance=0.02"),
              server=teacher_server, recipe="evol_instruct")
    stages = report(run_dir)
    roots = stages["evolve"]["rows_in"]
    evolve = stages["evolve"]
    assert evolve["rows_out"] + sum(evolve["dropped"].values()) == 2 * roots  # one row per root and round
    quarantine = pl.read_parquet(run_dir / "quarantine.parquet").filter(pl.col("stage").str.contains("evolve"))
    failed = [json.loads(raw) for raw in quarantine["raw"].to_list()]
    assert len(failed) == sum(evolve["dropped"].values())
    rows = datasets.load_dataset(str(run_dir / "export"), cache_dir=str(tmp_path / "hf"))
    got = [row for split in rows.values() for row in split]
    evolved = pl.concat([pl.read_parquet(p) for p in sorted(run_dir.glob("*_evolve/part-*.parquet"))])
    kept = {row["prompt_id"]: row for row in evolved.to_dicts()}  # select may leave a parent out of the export
    for row in got:
        assert row["round"] in (1, 2) and row["operation"] in E.OPERATIONS
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert E.instruction_problem(row["prompt"], "", 200, False) is None
        assert E.answer_problem(row["messages"][1]["content"], 8) is None
        assert row["complexity"] is None or (1 <= row["complexity"] <= 6 and row["complexity_rationale"] is not None)
        if row["round"] == 1:
            assert row["parent_id"] == row["root_id"]
        else:  # a round-2 row grew from its root or a kept round-1 row, never from a failed one
            assert row["parent_id"] == row["root_id"] or kept[row["parent_id"]]["root_id"] == row["root_id"]
    assert not {f["prompt_id"] for f in failed} & {row["parent_id"] for row in got}  # failures are no parents
    for reason, f in zip(quarantine["reason"], failed):  # each failure names its rule, and keeps what was refused
        assert reason.split(":")[0] in E.REASONS and f["parent_prompt"], reason
    card = (run_dir / "export" / "README.md").read_text()
    for picture in ("scores.png", "selection.png"):  # complexity scores, and the selection's distances
        assert f"(pictures/{picture})" in card and (run_dir / "export" / "pictures" / picture).stat().st_size > 1000
    assert "| round | tried | kept | kept share |" in card and "| 1 | " in card and "| 2 | " in card
    assert "`prompts/evol_instruct.yaml`" in card
    from pipelines.train.options import SFTOptions
    from pipelines.train.sft import train_sft

    assert got, "no evolution survived"
    select = stages["select"]  # embedded by the embedded embedder, best complexity first
    assert select["rows_in"] == stages["score"]["rows_out"] and select["rows_out"] == len(got)
    trained = train_sft(SFTOptions(str(run_dir / "export"), max_steps=1, max_length=128, batch_size=1))
    assert (Path(trained["output_dir"]) / "tokenizer_config.json").exists()
    before = requests_in(run_dir)
    again = run_build(run_dir, *evol_sets(teacher_server, sources, "select.enabled=true", "select.min_distance=0.02"),
                      server=teacher_server, recipe="evol_instruct", extra=("--fresh",))
    assert requests_in(run_dir) == before and "requests 0" in again.stdout  # a rerun asks nothing anew


def test_a_killed_evol_build_resumes_where_it_stopped(tmp_path, teacher_server):
    run_dir = tmp_path / "killed"
    sets = evol_sets(teacher_server, "n_instructions=18", "rounds=1", "complexity=false", "judge_gain=false",
                     "sampling.max_tokens_evolve=48", "sampling.max_tokens_answer=24")[1:]  # seed tasks: 2 batches
    cmd = build_cmd(run_dir, *sets, server=teacher_server, recipe="evol_instruct")
    parts = kill_after_first_part(cmd, run_dir / "04_evolve")
    kept = [p.stat().st_mtime_ns for p in parts]
    run_build(run_dir, *sets, server=teacher_server, recipe="evol_instruct")
    assert [p.stat().st_mtime_ns for p in parts] == kept  # finished batches were not redone
    evolve = report(run_dir)["evolve"]
    assert evolve["rows_in"] == 18 and evolve["rows_out"] + sum(evolve["dropped"].values()) == 18


def test_an_export_with_extra_columns_and_nothing_left_writes_no_split(tmp_path):
    from pipelines.core.stage import Context
    from pipelines.stages.export import ExportSFT

    stage = ExportSFT(extra_columns=("root_id", "round", "complexity"))  # every evolution failed
    out = list(stage.run(iter(()), Context(run_dir=tmp_path, config=None)))
    assert out[0].height == 0 and not list((tmp_path / "export" / "data").iterdir())
