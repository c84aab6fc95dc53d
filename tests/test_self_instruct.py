"""Self-Instruct: ROUGE-L against rouge-score, the filters, the list parser, seed files, and a build on the embedded
teacher (export with SFT and Alpaca columns, card, rerun sends nothing)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from rouge_score import rouge_scorer

from conftest import ROOT, report, run_build
from pipelines.core.errors import SourceError
from pipelines.core.stage import DROP, Context
from pipelines.dedup.rouge import RougePool, rouge_l, tokenize
from pipelines.recipes.self_instruct import Config, seeds_path, stages
from pipelines.stages.self_instruct import GenerateInstructions, Sampling, check_output
from pipelines.prompts.self_instruct import (build_generation, check_instruction, input_shots,
                                                    load_seed_tasks, parse_input, parse_tasks)
from pipelines.teacher.wire import Result

DATA = Path(__file__).parent / "data" / "self_instruct"
REAL_SEEDS = ROOT.parent / "shared" / "data" / "real" / "self_instruct_seed_tasks.jsonl"
SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
EDGE = ["", "   ", "!!! ... ???", "a", "a a a a a", "a b a b a b a", "b a b a", "The cat sat on the mat.",
        "the CAT, sat -- on the mat!!!", "Don't PANIC: 42 is the answer", "dont panic 42 is the answer",
        "caf\u00e9 na\u00efve r\u00e9sum\u00e9", "\u0130stanbul \ufb01le ma\u00f1ana", "x_y x-y x.y",
        "tab\tand\nnewline",
        "1 2 3 4 5 6 7 8 9 10", "10 9 8 7 6 5 4 3 2 1", "repeat repeat repeat once", "once repeat"]


def score(a: str, b: str) -> float:
    return SCORER.score(a, b)["rougeL"].fmeasure


def test_seed_files_load_ours_and_the_original():
    ours = load_seed_tasks(seeds_path(Config()))
    original = load_seed_tasks(REAL_SEEDS)
    assert len(ours) >= 40 and len(original) == 175
    assert {"id", "name", "instruction", "instances", "is_classification"} <= set(ours[0])
    assert any(t["is_classification"] for t in ours) and any(not t["instances"][0]["input"] for t in ours)
    # Project-written, not copied: no seed of ours is a near-copy of an original seed task.
    pool = RougePool()
    pool.extend([t["instruction"] for t in original], [t["id"] for t in original])
    assert [t["id"] for t in ours if pool.most_similar(t["instruction"], 0.7)[1]] == []
    shots = input_shots(original)
    assert len(shots) == 4 and [bool(given) for _, given in shots] == [True, False, True, False]


def test_a_bad_seed_file_names_the_line(tmp_path):
    with pytest.raises(SourceError, match=r"bad_seeds.jsonl:2: missing instances"):
        load_seed_tasks(DATA / "bad_seeds.jsonl")
    with pytest.raises(SourceError, match="cannot read seed tasks"):
        load_seed_tasks(tmp_path / "missing.jsonl")
    proc = subprocess.run([sys.executable, "-m", "pipelines.build", "self_instruct", "--run-dir",
                           str(tmp_path / "run"), "--set", f"seeds={DATA / 'bad_seeds.jsonl'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "bad_seeds.jsonl:2" in proc.stderr and "Traceback" not in proc.stderr


def pairs() -> list[tuple[str, str]]:
    """About 200 pairs: edge cases against each other, real instructions against edited copies, random word soup."""
    rng = random.Random(0)
    out = [(a, b) for a in EDGE[:10] for b in EDGE[::2]]
    real = [t["instruction"] for t in load_seed_tasks(REAL_SEEDS)][:60]
    for text in real:
        words = text.split()
        edited = [w if rng.random() > 0.25 else rng.choice(["the", "a", "new", "given", "Write", "list"])
                  for w in words]
        out.append((text, " ".join(edited)))
        out.append((text, rng.choice(real)))
    vocab = "a the of to and cat dog write list explain why 1 2".split()
    for _ in range(40):
        a, b = (" ".join(rng.choices(vocab, k=rng.randint(0, 15))) for _ in range(2))
        out.append((a, b))
    return out


def test_rouge_l_agrees_with_rouge_score_exactly():
    cases = pairs()
    assert len(cases) >= 200
    for a, b in cases:
        assert abs(rouge_l(a, b) - score(a, b)) < 1e-9, (a, b)
        assert rouge_l(a, b) == rouge_l(b, a)
    for text in EDGE:
        assert tokenize(text) == SCORER._tokenizer.tokenize(text), text


def test_pool_finds_the_same_best_match_as_brute_force():
    rng = random.Random(1)
    cases = pairs()
    texts = [b for _, b in cases]
    pool = RougePool()
    pool.extend(texts, [str(i) for i in range(len(texts))])
    for a, _ in cases[::3]:
        expected = [score(a, b) for b in texts]
        assert pool.scores(a).tolist() == pytest.approx(expected, abs=1e-9)
        for threshold in (0.5, 0.7, rng.random()):
            best, key = pool.most_similar(a, threshold)
            top = max(expected)
            if top > threshold:
                assert best == pytest.approx(top, abs=1e-9) and key == str(expected.index(top))
            else:
                assert (best, key) == (None, None)
    assert pool.computed < len(cases[::3]) * 3 * len(texts) / 4  # the bounds skip most of the pool


def generator(**settings) -> GenerateInstructions:
    tasks = load_seed_tasks(seeds_path(Config()))
    return GenerateInstructions(seed_tasks=tuple((t["id"], t["instruction"]) for t in tasks), sampling=Sampling(),
                                **settings)


def test_rouge_filter_rejects_a_near_copy_and_keeps_a_novel_one():
    stage = generator()
    pool = RougePool()
    pool.extend([text for _, text in stage.seed_tasks], [key for key, _ in stage.seed_tasks])
    reason = stage._check("Write a haiku about the first snow in winter.", pool)
    assert reason.startswith("too_similar: rouge-l 0.") and reason.endswith(" to seed_task_19"), reason
    assert stage._check("Describe how a bicycle gear system lets riders climb steep hills.", pool) is None


def test_length_blacklist_and_junk_filters():
    assert check_instruction("Name a warm colour", 4, 150) is None
    assert check_instruction("Name a colour.", 4, 150) == "length: 3 words"
    assert check_instruction("Name three", 4, 150) == "length: 2 words"
    assert check_instruction("word " * 151, 4, 150) == "length: 151 words"
    assert check_instruction("Describe the image of a cat.", 4, 150) == "blacklist: image"
    assert check_instruction("Please go to the bakery and buy bread.", 4, 150) == "blacklist: go to"
    assert check_instruction("Draw a flowchart of the process.", 4, 150) == "blacklist: draw"
    assert check_instruction("Write a program that sorts numbers.", 4, 150) == "blacklist: write a program"
    assert check_instruction("Summarize the profile of the mapmaker.", 4, 150) is None  # whole words only
    assert check_instruction("- Name three birds of prey.", 4, 150).startswith("junk: starts with punctuation")
    assert check_instruction("\u00bfC\u00f3mo est\u00e1s hoy amigo?", 4, 150).startswith("junk")
    assert check_instruction("\u4f60\u597d means hello in Chinese", 4, 150) == \
        "junk: starts with a non-ASCII character"
    assert check_instruction("12 + 34 = 46 ; 7 * 8", 4, 150).startswith("junk: 0 of")
    assert check_instruction("The answer is: you cannot eat it.", 4, 150) == "junk: chatter or an answer, not a task"
    assert check_instruction("Here are four new tasks for you", 4, 150).startswith("junk: chatter")
    assert check_instruction("The Earth orbits the Sun; explain why seasons change.", 4, 150) is None


def test_parser_reads_messy_numbered_lists():
    answers = (DATA / "smollm2_lists.txt").read_text().split("=====\n")
    parsed = [parse_tasks(a) for a in answers]
    assert [len(p) for p in parsed] == [4, 4, 1, 0, 4, 4, 0]
    assert parsed[1][2] == 'Describe the word "miracle" to a child.'
    assert parsed[5] == ["Name three rivers that flow through Africa.",
                         'Translate the phrase "good morning" into Spanish.', "Compare a bicycle and a car",
                         "Count the vowels in the given word."]
    assert parse_tasks("") == [] and parse_tasks(None) == []
    assert parse_tasks('Task 9: The answer is "You cannot eat it') == ['The answer is "You cannot eat it']
    assert parse_tasks("9. Name a planet.\n10) List two metals.\nIt costs 3.5 dollars.") == \
        ["Name a planet.", "List two metals."]
    prompt = build_generation(["Name a colour.", "List two fruits:"], 3)[-1]["content"]
    assert "Task 1: Name a colour.\nTask 2: List two fruits\n" in prompt and "Task 3 to Task 5" in prompt


def test_inputs_and_outputs_are_parsed_and_checked():
    assert parse_input("<noinput>", "Name a colour.") == ("", None)
    assert parse_input("Input: Paris, Rome\n\nOutput: Italy", "Which is the capital?") == ("Paris, Rome", None)
    assert parse_input("None.", "x") == ("", None)
    assert parse_input("Task 9: Name a bird.", "x") == ("", "input_was_a_task")
    assert parse_input("Name a colour", "Name a colour.") == ("", "input_copied_instruction")
    assert check_output("", "Name a colour.", "") == "empty_output: no text"
    assert check_output("Name a colour.", "Name a colour.", "").startswith("repeated")
    assert check_output("As an AI, I cannot do that.", "x", "").startswith("refusal")
    assert check_output("Blue is a colour.", "Name a colour.", "") is None
    looping = "To give a gift to a stranger is to give a gift to a stranger is to give a gift to a stranger"
    assert check_output(looping, "x", "") == "repeated: the output loops"


class CannedTeacher:
    """Answers each request with the next canned text, in turn; "FAIL" stands for a failed request."""

    def __init__(self, answers: list[str]):
        self.answers = answers
        self.sent: list = []

    def chat_many(self, requests, desc=""):
        out = []
        for request in requests:
            text = self.answers[len(self.sent) % len(self.answers)]
            self.sent.append(request)
            out.append(Result(text=text, finish_reason="stop") if text != "FAIL" else Result(None, "http_500"))
        return out


def test_generation_rounds_filters_and_counts_on_the_original_seeds(tmp_path):
    tasks = load_seed_tasks(REAL_SEEDS)
    answers = (DATA / "smollm2_lists.txt").read_text().split("=====\n") + ["FAIL"] + [
        "Task 9: Suggest a name for a pet turtle.\nTask 10: Draw a map of the old trade routes.",
        "Task 9: Explain how a compass works to a beginner sailor.",
        "Task 9: List the planets of the solar system in order.",
        "Task 9: Give advice to someone starting a vegetable garden."]
    stage = GenerateInstructions(seed_tasks=tuple((t["id"], t["instruction"]) for t in tasks), sampling=Sampling(),
                                 n_instructions=15, max_rounds=5, requests_per_round=4)
    teacher = CannedTeacher(answers)
    ctx = Context(run_dir=tmp_path, config=None, clients={"teacher": teacher})
    rows = pl.concat(list(stage.read(ctx)))
    kept = rows.filter(pl.col(DROP).is_null())
    # Round 1: 7 of 9 candidates kept (two repeats), one answer without tasks; round 2: 7 of 8 kept, one answer
    # without tasks, one failed request; round 3: the 15th instruction, a blacklisted one, then surplus.
    assert kept.height == 15 and ctx.counters["rounds"] == 3
    assert ctx.counters["parse_failed"] == 2 and ctx.counters["request_failed"] == 1
    assert rows.height == ctx.counters["candidates"] == 22
    reasons = rows[DROP].drop_nulls().to_list()
    assert reasons[:2] == ["too_similar: rouge-l 0.88 to gen_r1_q0_1", "too_similar: rouge-l 1.00 to gen_r1_q0_0"]
    assert reasons[-4:] == ["blacklist: draw"] + ["surplus: 15 instructions already accepted"] * 3
    assert kept["instruction"].n_unique() == 15
    shown = json.loads(kept["generation"][-1])["examples"]
    assert len(shown) == 8 and sum(k.startswith("gen_") for k in shown) == 2  # 6 seed + 2 machine tasks
    assert "Task 9 to Task 12" in teacher.sent[0].messages[-1]["content"]


def build(run_dir: Path, *overrides: str, server) -> subprocess.CompletedProcess:
    return run_build(run_dir, *overrides, server=server, recipe="self_instruct")


TINY = ("n_instructions=4", "max_rounds=6", "requests_per_round=4", "sampling.max_tokens_tasks=80",
        "sampling.max_tokens_input=24", "sampling.max_tokens_output=48")


def test_build_on_the_embedded_teacher_exports_sft_and_alpaca_columns(tmp_path, teacher_server):
    from datasets import load_dataset

    run_dir = tmp_path / "self_instruct"
    first = build(run_dir, *TINY, server=teacher_server)
    stages_run = report(run_dir)
    assert stages_run["instructions"]["requests"] > 0, first.stdout
    assert stages_run["instructions"]["rows_out"] == 4
    for row in stages_run.values():
        assert row["rows_in"] == row["rows_out"] + sum(row["dropped"].values()), row

    export = run_dir / "export"
    ds = load_dataset(str(export), cache_dir=str(tmp_path / "hf"))
    rows = [r for split in ds.values() for r in split]
    assert rows and len(rows) == stages_run["export"]["rows_out"]
    for split in ds.values():
        assert split.column_names == ["prompt", "prompt_id", "messages", "instruction", "input", "output"]
    for r in rows:
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
        assert r["messages"][0]["content"] == (f"{r['instruction']}\n\n{r['input']}" if r["input"]
                                               else r["instruction"])
        assert r["prompt"] == r["messages"][0]["content"] and r["messages"][1]["content"] == r["output"]
        assert r["output"].strip()
    card = (export / "README.md").read_text()
    assert "instructions" in card and "too_similar" in card.split("## Pipeline")[0]
    assert "$" not in card.split("```json")[0]

    again = build(run_dir, *TINY, server=teacher_server)
    assert json.loads((run_dir / "report.json").read_text())["this_run"]["requests"] == 0
    assert {row["status"] for row in report(run_dir).values()} == {"skipped"}, again.stdout

    build(run_dir, *TINY, "scores=true", "select.enabled=true", "select.min_distance=0.02", server=teacher_server)
    scored = report(run_dir)
    assert scored["instructions"]["status"] == "skipped" and scored["score"]["rows_in"] == scored["score"]["rows_out"]
    assert scored["select"]["rows_in"] == scored["score"]["rows_out"]  # DEITA: scored, then picked by deita_score
    ds = load_dataset(str(export), cache_dir=str(tmp_path / "hf2"))
    picked = [r for split in ds.values() for r in split]
    assert len(picked) == scored["select"]["rows_out"]
    for r in picked:
        both = r["complexity"] is not None and r["quality"] is not None
        assert r["deita_score"] == (r["complexity"] * r["quality"] if both else None)
    assert (export / "pictures" / "scores.png").stat().st_size > 1000


def test_recipe_stages_chain():
    from pipelines.build import check_chain

    check_chain(stages(Config()))
    assert [s.name for s in stages(Config())] == ["instructions", "inputs", "outputs", "validate", "dedup_exact",
                                                   "export"]
