"""`python -m pipelines.eval` on real models: GSM8K against a baseline with paired CIs, a rerun that replays the
cache, the judged suite's two orders (a judge that always picks the first answer scores every item 1/2), a judge
that never answers usefully, and bad input as one line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from pipelines.core.locks import LOCKED, DirLock
from pipelines.eval.stats import mean_ci, paired_ci
from pipelines.eval.suites.judged import length_controlled
from pipelines.teacher.weights import gguf_path
from test_teacher import FaultServer
from test_train import write_prefs_export


def run_eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.eval", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)


def test_gsm8k_against_a_baseline_with_paired_cis_replays_from_its_cache(tmp_path):
    same_weights = str(gguf_path("smollm2-135m"))  # the embedded model's own file: other name, same answers
    args = ("smollm2-135m", "--baseline", same_weights, "--suites", "gsm8k", "--limit", "3", "--eval-dir",
            str(tmp_path / "ev"))
    first = run_eval(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    found = json.loads((tmp_path / "ev" / "gsm8k.json").read_text())
    assert [r["id"] for r in found["items"]] == ["gsm8k-0", "gsm8k-1", "gsm8k-2"]
    for row in found["items"]:
        assert row["output"] and row["verdict"] in ("correct", "wrong", "no final number")
        assert row["score"] == float(row["verdict"] == "correct") and row["reference"] == row["reference"].strip()
        assert row["baseline_output"] and row["baseline_verdict"] in ("correct", "wrong", "no final number")
    summary = found["summary"]
    differences = [r["score"] - r["baseline_score"] for r in found["items"]]
    assert summary["items"] == 3 and summary["difference"][0] == round(sum(differences) / 3, 4)
    assert summary["difference"][1] <= summary["difference"][0] <= summary["difference"][2]
    assert "| gsm8k | 3/3 |" in (tmp_path / "ev" / "report.md").read_text() and "this run: 6 requests" in first.stdout
    again = run_eval(*args)
    assert again.returncode == 0 and "this run: 0 requests" in again.stdout  # a rerun replays the cache
    assert json.loads((tmp_path / "ev" / "gsm8k.json").read_text())["summary"] == summary


def judge_server(answer):
    server = FaultServer(answer=answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_the_judged_suite_asks_both_orders_and_survives_a_judge_that_says_nothing(teacher_server, tmp_path):
    model = f"base_url={teacher_server.base_url},model={teacher_server.model}"
    always_first = judge_server(lambda body: '{"better": 1}')
    useless = judge_server(lambda body: "I cannot decide.")
    try:
        proc = run_eval(model, "--baseline", model, "--suites", "judged", "--limit", "3", "--judge",
                        f"base_url={always_first.url},model=first", "--eval-dir", str(tmp_path / "a"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        found = json.loads((tmp_path / "a" / "judged.json").read_text())
        assert [r["score"] for r in found["items"]] == [0.5] * 3  # position bias cancels out over two orders
        assert {(r["model_first"], r["baseline_first"]) for r in found["items"]} == {(1.0, 0.0)}
        assert found["summary"]["score"][0] == 0.5 and found["summary"]["order_agreement"] == 0.0
        assert found["summary"]["verdicts"] == {"tie": 3}
        proc = run_eval(model, "--baseline", model, "--suites", "judged", "--limit", "3", "--judge",
                        f"base_url={useless.url},model=useless", "--eval-dir", str(tmp_path / "b"))
        assert proc.returncode == 0, proc.stderr[-3000:]  # counted, never fatal
        found = json.loads((tmp_path / "b" / "judged.json").read_text())
        assert found["summary"]["scored"] == 0 and found["summary"]["verdicts"] == {"judge gave no verdict": 3}
    finally:
        for server in (always_first, useless):
            server.shutdown()
            server.server_close()


def test_bad_input_is_one_line_and_two_evals_take_turns(tmp_path):
    prefs = write_prefs_export(tmp_path / "prefs")
    cases = {
        "is not a checkpoint directory, a .gguf file, an embedded model": ["no-such-model"],
        "suite 'mmlu': choose among ifbench, ifeval_dev, gsm8k, judged, prefs": ["smollm2-135m", "--suites", "mmlu"],
        "give --prefs-export DIR": ["smollm2-135m", "--suites", "prefs"],
        "is not a checkpoint directory or an embedded model": [
            "base_url=http://127.0.0.1:9/v1,model=x", "--suites", "prefs", "--prefs-export", str(prefs)],
        "give --baseline MODEL": ["smollm2-135m", "--suites", "judged", "--limit", "1",
                                  "--judge", "base_url=http://127.0.0.1:9/v1,model=x"],
        "write base_url=URL,model=NAME": ["base_url=http://127.0.0.1:9/v1"],
        "unknown setting 'colour'; endpoints take mode": ["base_url=http://127.0.0.1:9/v1,model=x,colour=red"],
        "max_cost='lots' is not a float": ["base_url=http://127.0.0.1:9/v1,model=x,max_cost=lots"],
        "has no weights": [str(tmp_path / "empty")],
    }
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    for expected, args in cases.items():
        proc = run_eval(*args, "--eval-dir", str(tmp_path / "ev"))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert lines[-1].startswith("error:") and expected in lines[-1], (expected, proc.stderr[-2000:])
    (tmp_path / "busy").mkdir()
    with DirLock(tmp_path / "busy" / ".lock", "another eval"):
        proc = run_eval("smollm2-135m", "--limit", "1", "--eval-dir", str(tmp_path / "busy"))
    assert proc.returncode == LOCKED and proc.stderr.strip().splitlines()[-1].startswith("busy:")


def test_the_statistics():
    assert paired_ci([1, 0, 1], [1, 0, 1]) == (0.0, 0.0, 0.0)
    mean, low, high = mean_ci([0.0, 1.0] * 50)
    assert mean == 0.5 and 0.39 < low < 0.5 < high < 0.61
    rng = np.random.default_rng(0)
    differences = rng.normal(300, 300, 2000)  # MODEL's answers run longer
    sd = differences.std()
    wins = (rng.random(2000) < 1 / (1 + np.exp(-3 * np.tanh(differences / sd)))).astype(float)  # length alone wins
    assert wins.mean() > 0.65  # the raw win rate rewards length
    assert abs(length_controlled(wins, differences) - 0.5) < 0.08  # at equal length: a coin


def test_builds_decontaminate_against_the_suites_by_name(tmp_path):
    from conftest import report, run_build
    from pipelines.eval.suites import gsm8k, ifbench, ifeval_dev, judged

    rows = [gsm8k.items(3)[2]["question"], judged.items(1)[0]["instruction"], ifbench.items(2)[1]["prompt"],
            ifeval_dev.items(1)[0]["base"], "Write a short poem about a lighthouse."]
    source = tmp_path / "mixed.jsonl"
    source.write_text("".join(json.dumps({"messages": [{"role": "user", "content": text},
                                                       {"role": "assistant", "content": "An answer."}]}) + "\n"
                              for text in rows))
    run_build(tmp_path / "run", f"sources={source}", "benchmarks=gsm8k,judged,ifbench,ifeval_dev", recipe="dedup")
    dropped = report(tmp_path / "run")["decontaminate"]["dropped"]
    assert dropped == {"contaminated": 4}


def test_an_eval_killed_mid_run_resumes_from_its_cache(tmp_path):
    import signal
    import sqlite3
    import time

    args = [sys.executable, "-m", "pipelines.eval", "smollm2-135m", "--suites", "gsm8k", "--limit", "5",
            "--concurrency", "1",
            "--eval-dir", str(tmp_path / "ev")]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    cache, answered = tmp_path / "ev" / "requests.sqlite", 0
    deadline = time.monotonic() + 300
    while answered < 1 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.3)
        try:
            with sqlite3.connect(cache) as db:
                answered = db.execute("SELECT count(*) FROM responses").fetchone()[0]
        except sqlite3.Error:
            pass
    os.killpg(proc.pid, signal.SIGKILL)  # the eval and its embedded server, at once
    proc.wait()
    assert 1 <= answered < 5 and not (tmp_path / "ev" / "gsm8k.json").exists()
    again = run_eval(*args[3:])
    assert again.returncode == 0, again.stderr[-2000:]
    requests = int(again.stdout.split("this run: ")[1].split()[0])
    assert requests <= 5 - answered  # what was answered before the kill is not asked again
    assert json.loads((tmp_path / "ev" / "gsm8k.json").read_text())["summary"]["items"] == 5


def test_prefs_scores_each_pair_by_the_answers_log_probabilities(tmp_path):
    import polars as pl
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipelines.teacher.weights import ensure_checkpoint

    export = write_prefs_export(tmp_path)
    proc = run_eval("smollm2-135m", "--suites", "prefs", "--prefs-export", str(export), "--eval-dir",
                    str(tmp_path / "ev"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads((tmp_path / "ev" / "prefs.json").read_text())
    pairs = pl.read_parquet(sorted((export / "data").glob("test_prefs-*.parquet"))).to_dicts()
    assert found["summary"]["items"] == len(pairs) == 4
    checkpoint = ensure_checkpoint()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    for row, pair in zip(found["items"], pairs):
        for side in ("chosen", "rejected"):  # an independent path: the model's own loss on the answer's tokens
            messages = pair[side]
            prompt = list(tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True,
                                                        return_dict=False))
            whole = list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))
            labels = torch.tensor([[-100] * len(prompt) + whole[len(prompt):]])
            with torch.no_grad():
                loss = model(torch.tensor([whole]), labels=labels).loss.item()
            assert row[f"logp_{side}"] == pytest.approx(-loss * (len(whole) - len(prompt)), rel=1e-4, abs=1e-3)
        assert row["score"] == float(row["logp_chosen"] > row["logp_rejected"])


def test_items_in_the_training_data_are_removed_through_the_lineage(tmp_path):
    import torch

    from pipelines.eval.suites import gsm8k
    from pipelines.train.options import SFTOptions
    from pipelines.train.sft import train_sft
    from schemas import prompt_id
    from test_train import TINY, write_shard

    leaked = gsm8k.items(3)[1]["question"]
    rows = [{"prompt": q, "prompt_id": prompt_id(q), "messages": [{"role": "user", "content": q},
                                                                  {"role": "assistant", "content": "Done."}]}
            for q in [leaked, "Name a primary colour.", "What is the capital of France?", "Say hello."]]
    write_shard(tmp_path / "export" / "data", "train_sft", rows)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = Path(train_sft(SFTOptions(str(tmp_path / "export"), **TINY), log=lambda *_: None)["output_dir"])
    finally:
        torch.set_num_threads(threads)
    assert json.loads((out / "train_metrics.json").read_text())["export"] == str((tmp_path / "export").resolve())
    proc = run_eval(str(out), "--suites", "gsm8k", "--limit", "3", "--eval-dir", str(tmp_path / "ev"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads((tmp_path / "ev" / "gsm8k.json").read_text())
    assert [r["id"] for r in found["items"]] == ["gsm8k-0", "gsm8k-2"]
    removed = found["summary"]["decontamination"]
    assert removed["removed"] == 1 and list(removed["removed_items"]) == ["gsm8k-1"]
    assert "1 items removed: in the training data" in (tmp_path / "ev" / "report.md").read_text()
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")  # the model card: lineage, training, results as model-index
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert str((tmp_path / "export").resolve()) in card.text and "`sft`" in card.text
    [result] = card.data.eval_results
    assert result.dataset_type == "openai/gsm8k" and result.metric_value == found["summary"]["score"][0]


def test_models_that_answer_nothing_or_garbage_score_zero_with_a_verdict(tmp_path):
    answers = {"empty": lambda body: "", "garbage": lambda body: "\u2211\u2211 lorem \x00 ipsum"}
    for name, answer in answers.items():
        server = judge_server(answer)
        try:
            proc = run_eval(f"base_url={server.url},model={name}", "--suites", "gsm8k,ifeval_dev", "--limit", "2",
                            "--eval-dir", str(tmp_path / name))
        finally:
            server.shutdown()
            server.server_close()
        assert proc.returncode == 0, proc.stderr[-2000:]
        found = json.loads((tmp_path / name / "gsm8k.json").read_text())
        assert [r["score"] for r in found["items"]] == [0.0, 0.0]
        assert all(r["verdict"] == "no final number" or r["verdict"].startswith("no output")
                   for r in found["items"]), found["items"]
        following = json.loads((tmp_path / name / "ifeval_dev.json").read_text())["items"]
        if name == "empty":
            found = [(r["verdict"], r["score"], any(r["loose"])) for r in following]
            assert found == [("empty answer", 0.0, False)] * 2
        assert all(r["score"] == float(all(r["strict"])) and r["verdict"] in ("empty answer", "missed some",
                                                                               "followed all") for r in following)


def test_the_review_app_shows_an_evals_items_side_by_side_by_verdict(tmp_path):
    from starlette.testclient import TestClient

    from pipelines.review.app import create_app

    hostile = judge_server(lambda body: "<script>alert(1)</script> ![x](http://127.0.0.1:9/x.png)\n#### 18")
    silent = judge_server(lambda body: "no idea")
    try:
        proc = run_eval(f"base_url={hostile.url},model=hostile", "--baseline", f"base_url={silent.url},model=silent",
                        "--suites", "gsm8k,ifeval_dev", "--limit", "3", "--eval-dir", str(tmp_path / "ev"))
    finally:
        for server in (hostile, silent):
            server.shutdown()
            server.server_close()
    assert proc.returncode == 0, proc.stderr[-2000:]
    web = TestClient(create_app(tmp_path / "ev", "t", {"testserver"}))
    assert web.get("/", follow_redirects=False).headers["location"] == "/eval"
    page = web.get("/eval/gsm8k")
    assert page.status_code == 200 and page.headers["x-frame-options"] == "DENY"
    assert page.text.count('class="item eval"') == 3 and "side-by-side" in page.text
    assert "<script>alert" not in page.text and "[image: x]" in page.text  # data is text, images are links
    correct = web.get("/eval/gsm8k?verdict=correct").text  # GSM8K's first answer is 18
    assert re.findall(r"<code>(gsm8k-\d+)</code>", correct) == ["gsm8k-0"]
    assert web.get("/eval/mmlu").status_code == 404
    following = web.get("/eval/ifeval_dev?verdict=missed+some").text  # the prompt, and what each model missed
    assert "Explain the structure of an atom." in following and "model missed:" in following
    assert "<code>detectable_format:title</code>" in following and "baseline missed:" in following
