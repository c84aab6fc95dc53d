"""The critique-and-revise recipe: the constitution file, the revision checks, the judged gate, a build on the
embedded models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from pipelines.core.errors import ConfigError
from pipelines.stages.revise import KeepImproved, load_constitution, revision_problem, split_answer

ROOT = Path(__file__).resolve().parents[1]
ANSWER = ("The Eiffel Tower is in Paris and was finished in 1899. It is about 330 metres tall and was built for the "
          "World's Fair.")


def test_the_shipped_constitution_loads_and_a_bad_entry_is_one_line_with_its_line_number(tmp_path):
    names = [p["name"] for p in load_constitution(ROOT / "pipelines" / "data" / "constitution.jsonl")]
    assert "accurate" in names and len(names) == len(set(names))
    bad = tmp_path / "c.jsonl"
    good = json.dumps({"name": "kind", "critique": "is rude", "revision": "Be polite."})
    for second, found in [('{"name": "x", "critique": ""}', "c.jsonl:2: critique, revision missing or empty"),
                          ("not json", "c.jsonl:2: not JSON"), (good, "c.jsonl:2: principle 'kind' is named twice"),
                          ("[1, 2]", "c.jsonl:2: expected an object")]:
        bad.write_text(f"{good}\n{second}\n")
        with pytest.raises(ConfigError, match=found.replace("(", r"\(")):
            load_constitution(bad)
    bad.write_text(f"{good}\n{{\"name\": \"y\"}}\n")
    proc = subprocess.run([sys.executable, "-m", "pipelines.build", "revise", "--run-dir", str(tmp_path / "run"),
                           "--set", f"constitution={bad}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "c.jsonl:2:" in proc.stderr


@pytest.mark.parametrize("revised, reason", [
    (ANSWER, "revision_unchanged"),
    (ANSWER.replace("1899", "1889"), None),  # the fact fixed, the rest kept: a minimal contrast
    ("Paris has many museums, parks and cafes worth a visit on a sunny day.", "revision_drifted"),
    ("", "empty_revision"),
    ("The tower is in Paris and it is tall. " * 20, "repeated"),
    (" " + ANSWER.replace(". ", ".  "), "revision_unchanged"),
    (ANSWER.replace("1899", "1889") + '\n\nThe critique of "1899": wrong year.', "revision_echoes_prompt"),
])
def test_a_revision_must_change_the_answer_but_not_rewrite_it(revised, reason):
    found = revision_problem(ANSWER, revised)
    assert (found or "").split(":")[0] == (reason or "")


def test_the_answer_is_the_last_assistant_turn():
    turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert split_answer(turns) == (turns[:1], "a")
    assert split_answer(turns[:1]) is None and split_answer([*turns[:1], {"role": "assistant", "content": " "}]) is None


def test_only_a_revision_the_judge_scores_higher_is_kept(tmp_path):
    from pipelines.core.stage import Context
    from pipelines.stages.pairs import COMPLETIONS

    def pair(original, revised):
        return [{"model": m, "principle": "accurate", "content": m, "ratings": [], "overall": s}
                for m, s in (("original", original), ("revised", revised))]

    frame = pl.DataFrame({"completions": [pair(4.0, 6.5), pair(5.0, 5.1), pair(6.0, 3.0), pair(None, 7.0)]},
                         schema={"completions": COMPLETIONS})
    ctx = Context(run_dir=tmp_path, config=None)
    stage = KeepImproved(min_gain=0.2)
    out = stage.process(frame, ctx)
    reasons = [r.split(":")[0] if r else None for r in out["drop_reason"].to_list()]
    assert reasons == [None, "revision_not_better", "revision_not_better", "unjudged"]
    assert stage.summary(ctx.counters)["revision"] == {"improved": 1, "not_better": 2, "mean_gain": 2.5}


def test_revise_build_on_the_embedded_models(tmp_path, teacher_server):
    """The recipe end to end with the session's SmolLM2 as critic, reviser and judge: every row accounted for,
    every drop a named check, pairs (if any) revised over original, the card filled; a rerun redoes nothing."""
    from conftest import report, run_build

    run_dir = tmp_path / "run"
    judge = (f"judge.base_url={teacher_server.base_url}", f"judge.model={teacher_server.model}")
    settings = ("n_rows=4", *judge)
    run_build(run_dir, *settings, server=teacher_server, recipe="revise")
    stages = report(run_dir)
    for name in ("critique", "revise", "keep_improved"):
        stage = stages[name]
        assert stage["rows_in"] == stage["rows_out"] + sum(stage["dropped"].values())
    known = {"nothing_to_revise", "span_not_in_answer", "critique_failed", "request_failed", "revision_unchanged",
             "revision_drifted", "repeated", "empty_revision", "revision_not_better", "unjudged", "judge_failed",
             "revision_echoes_prompt"}
    for name in ("critique", "revise", "judge", "keep_improved"):
        assert set(stages[name]["dropped"]) <= known, stages[name]["dropped"]
    assert stages["critique"]["rows_in"] == 4
    for split in (run_dir / "export" / "data").glob("*_prefs-*.parquet"):
        for row in pl.read_parquet(split).to_dicts():
            sides = {c["model"]: c["content"] for c in row["completions"]}
            assert row["chosen"][-1]["content"] == sides["revised"] and row["score_chosen"] > row["score_rejected"]
    card = (run_dir / "export" / "README.md").read_text()
    assert "$" not in card.split("---")[2] and "judged revisions scored enough higher" in card
    run_build(run_dir, *settings, server=teacher_server, recipe="revise")
    assert {row["status"] for row in report(run_dir).values()} == {"skipped"}
