"""Orca recipe: prompt kinds, the system-message draw, answer guards, the prompts stage, and one real build."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from datasets import load_dataset

from conftest import ROOT, report, run_build
from pipelines.core.stage import Context
from pipelines.stages.orca import (SeedOrca, check_answer, default_prompts, parse_answer, pick_system, prompt_kind,
                                   system_messages)
from schemas import prompt_id

DATA = ROOT / "tests" / "data" / "orca"
GSM = DATA / "gsm8k_style.jsonl"


def seed_rows(*sources: str, n_prompts: int = 48, seed: int = 0) -> tuple[pl.DataFrame, Counter]:
    ctx = Context(run_dir=Path("."), config=None)
    frame = next(SeedOrca(sources=sources, n_prompts=n_prompts, seed=seed).read(ctx))
    return frame, ctx.counters


def test_system_messages_have_ids_texts_and_every_kind_a_pool():
    messages = system_messages()
    assert len(messages) >= 12 and len({m["id"] for m in messages}) == len(messages)
    for kind in ("general", "math", "multiple_choice"):
        assert sum(kind in m["suits"] for m in messages) >= 2, kind
    # the documented rule: math prompts get only messages that ask for steps
    assert all("step by step" in m["text"] for m in messages if "math" in m["suits"])


def test_system_message_draw_is_deterministic_and_spread_over_the_set():
    prompts = [f"Write a short note about topic number {i}." for i in range(2400)]
    draws = [pick_system(prompt_id(p), "general", 0)["id"] for p in prompts]
    assert draws == [pick_system(prompt_id(p), "general", 0)["id"] for p in prompts]
    pool = [m["id"] for m in system_messages() if "general" in m["suits"]]
    counts = Counter(draws)
    assert set(counts) == set(pool)
    mean = len(prompts) / len(pool)
    assert all(0.75 * mean < n < 1.25 * mean for n in counts.values()), counts
    other_seed = [pick_system(prompt_id(p), "general", 1)["id"] for p in prompts]
    assert 0.7 < sum(a != b for a, b in zip(draws, other_seed)) / len(draws) < 0.95


@pytest.mark.parametrize("prompt, kind", [
    ("Sam has $50. He buys 3 books that cost $12 each. How much money does he have left?", "math"),
    ("Solve for x: 3x + 5 = 20.", "math"),
    ("The average of three numbers is 10. Two of them are 8 and 9. What is the third number?", "math"),
    ("Answer the following math problem.\n\nRoger has five balls and buys two more.", "math"),
    ("Where is milk kept?\nOptions:\n(A) a cupboard\n(B) a refrigerator", "multiple_choice"),
    ("Is the review positive or negative?\n\nGreat cake.\nOPTIONS:\n- positive\n- negative", "multiple_choice"),
    ("Summarize: the bridge opened in 1932 and is 1,149 metres long, more than the old one.", "general"),
    ("Extract the price and quantity: please send 12 packs of paper at $4.50 each.", "general"),
    ("Call me at 456-7891 or write to help@example.org about order 2023-01-05.", "general"),
])
def test_prompt_kind(prompt, kind):
    assert prompt_kind(prompt) == kind


def test_math_prompts_get_step_by_step_messages_and_choices_get_choice_messages():
    for line in GSM.read_text().splitlines():
        question = json.loads(line)["question"]
        assert prompt_kind(question) == "math"
    math_draws = {pick_system(prompt_id(f"How many apples are left if I eat {i} of 20?"), "math", 0)["id"]
                  for i in range(200)}
    by_id = {m["id"]: m for m in system_messages()}
    assert len(math_draws) >= 4
    assert all("step by step" in by_id[i]["text"] for i in math_draws)
    choice = {pick_system(prompt_id(f"Pick one {i}:\n(A) x\n(B) y"), "multiple_choice", 0)["id"] for i in range(50)}
    assert all("multiple_choice" in by_id[i]["suits"] and "option" in by_id[i]["text"] for i in choice)


PROMPT = ("Summarize in one sentence: The town council voted on Tuesday to close the old library for repairs. "
          "The building has a leaking roof and no heating.")


@pytest.mark.parametrize("answer, finish, reason", [
    ("The council will close the leaking, unheated library for repairs, as the vote on Tuesday decided.", "stop",
     None),
    ("As an AI assistant I will go step by step: the council closes the library because the roof leaks.", "stop",
     None),
    ("", "stop", "empty"),
    ("   \n", "stop", "empty"),
    ("Closed.", "stop", "too_short"),
    ("The council voted to close the library because the roof leaks and there is no heating, and the", "length",
     "truncated"),
    ("I'm sorry, but I can't help with that request.", "stop", "refusal"),
    ("I cannot assist with this task.", "stop", "refusal"),
    ("Here is the text again:\n\nThe town council voted on Tuesday to close the old library for repairs. The "
     "building has a leaking roof and no heating.", "stop", "repeats_prompt"),
    ("The town council voted on Tuesday to close the old library.", "stop", "repeats_prompt"),
    ("The library closes. The library closes. The library closes. The library closes.", "stop", "looping"),
])
def test_answer_guards(answer, finish, reason):
    got = check_answer(parse_answer(answer, finish, False), PROMPT, finish)
    assert (got and got.split(":")[0]) == reason, got


def test_restating_the_question_or_quoting_the_span_asked_for_is_not_an_echo():
    question = "Tom's birthday is in the month after March and before May. In which month is Tom's birthday?"
    assert check_answer("Tom's birthday is in the month of April.", question) is None
    assert check_answer("Tom's birthday is in the month after March.", question).startswith("repeats_prompt")
    extract = ("What date is the meeting, and where is it held?\n\nReminder: the volunteers' meeting moves to 14 "
               "March, in room 2B of the public library, starting at 6 pm.")
    assert check_answer("The meeting is scheduled for 14 March, in room 2B of the public library, starting at 6 pm.",
                        extract) is None
    assert check_answer("Reminder: the volunteers' meeting moves to 14 March, in room 2B of the public library.",
                        extract).startswith("repeats_prompt")


def test_a_truncated_answer_kept_on_request_is_trimmed_to_its_last_sentence():
    cut = "The council closes the library for repairs. The roof leaks and there is no heating. So the bui"
    kept = parse_answer(cut, "length", keep_truncated=True)
    assert kept.endswith("no heating.") and check_answer(kept, PROMPT, "length", keep_truncated=True) is None
    assert parse_answer("Assistant: 24 / 4 = 6, so six boxes.", "stop", False) == "24 / 4 = 6, so six boxes."


def test_prompts_are_first_user_turns_with_the_reference_in_meta():
    frame, _ = seed_rows(str(DATA / "chat.jsonl"))
    kept = frame.filter(pl.col("drop_reason").is_null())
    assert kept["prompt"].to_list() == ["Name a primary colour.", "Which option is a fruit?\n(A) carrot\n(B) apple\n"
                                        "(C) potato"]
    first = json.loads(kept["meta"][0])
    assert first["reference"] == "Red." and first["source_system"] == "You are a terse assistant."
    assert kept["prompt_kind"].to_list() == ["general", "multiple_choice"]
    assert set(kept["system"]) <= {m["text"] for m in system_messages()}
    reasons = Counter(r.split(":")[0] for r in frame["drop_reason"].drop_nulls())
    assert reasons == {"duplicate_prompt": 1, "bad_field": 1}  # the third record repeats the first prompt


def test_n_prompts_samples_by_hash_and_counts_the_rest():
    frame, counters = seed_rows(str(GSM), n_prompts=2)
    kept = frame.filter(pl.col("drop_reason").is_null())
    assert kept.height == 2 and counters["not_sampled"] == 2  # 4 distinct prompts (the 5th repeats the 2nd)
    again, _ = seed_rows(str(GSM), n_prompts=2)
    assert again.equals(frame)
    assert set(seed_rows(str(GSM), n_prompts=2, seed=5)[0]["prompt_id"].drop_nulls()) != set(kept["prompt_id"])


def test_default_prompts_cover_the_task_types_and_every_system_message():
    rows = [json.loads(line) for line in Path(default_prompts()).read_text().splitlines()]
    assert len(rows) == 48
    assert Counter(r["task"] for r in rows) == {t: 8 for t in ("reasoning", "math", "classification", "extraction",
                                                              "commonsense", "summarization")}
    frame, _ = seed_rows()
    assert frame.height == 48 and frame["drop_reason"].null_count() == 48
    assert set(frame["system_id"]) == {m["id"] for m in system_messages()}
    tasks = [json.loads(m)["task"] for m in frame["meta"]]
    assert all(kind == "math" for kind, task in zip(frame["prompt_kind"], tasks) if task == "math")


def build(run_dir: Path, server, *overrides: str) -> subprocess.CompletedProcess:
    return run_build(run_dir, *overrides, server=server, recipe="orca")


def test_build_on_the_embedded_teacher(tmp_path, teacher_server):
    run_dir = tmp_path / "orca"
    settings = (f"sources={GSM}", "sampling.max_tokens=64", "keep_truncated=true")
    build(run_dir, teacher_server, *settings)
    stages = report(run_dir)
    assert stages["prompts"]["rows_out"] == 4 and stages["prompts"]["dropped"] == {"duplicate_prompt": 1}
    assert stages["answer"]["requests"] >= 4
    for row in stages.values():
        assert row["rows_in"] == row["rows_out"] + sum(row["dropped"].values()), row

    export = run_dir / "export"
    dataset = load_dataset(str(export), cache_dir=str(tmp_path / "hf"))  # the card's YAML configs name the splits
    texts = {m["text"]: m["id"] for m in system_messages()}
    rows = [row for split in dataset.values() for row in split]
    assert rows and len(rows) == stages["export"]["rows_out"]
    for row in rows:
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert row["messages"][0]["content"] in texts
        assert row["prompt"] == row["messages"][1]["content"] and prompt_kind(row["prompt"]) == "math"
    card = (export / "README.md").read_text()
    assert all(f"| {m['id']} | {m['name']} |" in card for m in system_messages())
    assert "$" not in card.split("```json")[0]

    proc = build(run_dir, teacher_server, *settings)
    this_run = json.loads((run_dir / "report.json").read_text())["this_run"]
    assert this_run["requests"] == 0 and "this run: requests 0" in proc.stdout
    assert {row["status"] for row in report(run_dir).values()} == {"skipped"}
