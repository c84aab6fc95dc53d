"""Magpie: pre-query text from three chat-template families, each query filter, and builds on the real teacher."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import datasets
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import ROOT, build_cmd, error_endpoint, kill_after_first_part, report, run_build  # noqa: E402
from pipelines.prompts import load  # noqa: E402
from pipelines.prompts import magpie as M  # noqa: E402
from pipelines.stages.magpie import TAGS  # noqa: E402

TEMPLATES = ROOT / "tests" / "data" / "chat_templates"
CHATML = str(TEMPLATES / "chatml.jinja")
FAMILIES = {  # file: (pre-query text, end of turn)
    "chatml.jinja": ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                     "<|im_end|>\n<|im_start|>user\n", "<|im_end|>"),
    "llama3_tokenizer_config.json": ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>"),
    "gemma_tokenizer_config.json": ("<bos><start_of_turn>user\n", "<end_of_turn>"),
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_pre_query_text_and_end_of_turn_of_each_template_family(name):
    template, tokens = M.load_template(str(TEMPLATES / name))
    prefix, stop = FAMILIES[name]
    assert M.pre_query(template, tokens) == prefix
    assert M.stop_of(template, tokens) == stop


def test_the_next_turn_follows_the_conversation_so_far():
    template, tokens = M.load_template(str(TEMPLATES / "llama3_tokenizer_config.json"))
    history = [{"role": "user", "content": "What is a prime?"}, {"role": "assistant", "content": "A number ..."}]
    assert M.pre_query(template, tokens, history=history) == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is a prime?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nA number ...<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n")
    system = M.pre_query(*M.load_template(CHATML), system="You answer questions about chemistry.")
    assert system == "<|im_start|>system\nYou answer questions about chemistry.<|im_end|>\n<|im_start|>user\n"


def test_a_template_that_hides_the_user_message_is_refused():
    with pytest.raises(ValueError, match="does not show the user's message"):
        M.pre_query("{% for m in messages %}<turn>{% endfor %}", {})


@pytest.mark.parametrize("raw,query", [
    ("Q: What is the capital city of France? A: Paris", "What is the capital city of France?"),
    ("Question: How do I sort a list in Python?\nAnswer: use sorted().", "How do I sort a list in Python?"),
    ("Write a haiku about autumn leaves.<|im_end|>\n<|im_start|>assistant", "Write a haiku about autumn leaves."),
    ("Which is larger? A. 40  B. 50", "Which is larger? A. 40  B. 50"),  # options stay: they are the question
])
def test_clean_query(raw, query):
    assert M.clean_query(raw, "<|im_end|>") == query


PREFIX = FAMILIES["chatml.jinja"][0]


@pytest.mark.parametrize("query,reason", [
    ("Why?", "too_short"),
    ("<|im_start|>assistant How can I help you today?", "template_echo"),
    ("You are a helpful AI assistant named SmolLM, trained by Hugging Face, tell me more", "template_echo"),
    ("As an AI language model, I can help you with your homework questions.", "not_a_user"),
    ("SmolLM is a small model made by Hugging Face for phones. What version is it?", "not_a_user"),
    ("The weather was lovely and we walked along the river all afternoon.", "not_a_request"),
    ("How do I reverse a linked list in Python?", None),
    ("Write a short poem about the sea at night.", None),
    ("I need a recipe for a vegan chocolate cake without nuts.", None),
])
def test_each_query_filter(query, reason):
    found = M.query_problem(query, PREFIX, 4)
    assert (found.split(":")[0] if found else None) == reason, found


@pytest.mark.parametrize("answer,reason", [
    ("Paris.", "empty_answer"),
    ("As an artificial intelligence language model, I cannot provide information about that.", "refusal"),
    ("I'm sorry, but I can't help with that request.", "refusal"),
    ("I cannot provide medical advice, but a doctor can.", "refusal"),
    ("The capital of France is Paris, on the Seine.", None),
])
def test_each_answer_check(answer, reason):
    found = M.answer_problem(answer)
    assert (found.split(":")[0] if found else None) == reason, found


def test_the_language_filter_keeps_the_configured_languages():
    from pipelines.stages.magpie import MagpieDialogue, Template

    stage = MagpieDialogue(template=Template(pre_query="x"), languages=("en",))
    assert stage._language_problem("How do I reverse a linked list in Python?") is None
    assert stage._language_problem("¿Cómo puedo invertir una lista enlazada en Python?").startswith("language: es")
    assert MagpieDialogue(template=Template(pre_query="x"), languages=())._language_problem("¿Cómo?") is None


def magpie_sets(server, *more):
    judge = (f"judge.base_url={server.base_url}", f"judge.model={server.model}")  # the teacher tags its own rows
    return (f"chat_template={CHATML}", "n_queries=8", "turns=2", "sampling.max_tokens_answer=48", *judge, *more)


def requests_in(run_dir: Path) -> int:
    with sqlite3.connect(run_dir / "requests.sqlite") as db:
        return db.execute("SELECT count(*) FROM responses").fetchone()[0]


def test_magpie_build_on_the_embedded_teacher_exports_dialogues(tmp_path, teacher_server):
    run_dir = tmp_path / "magpie"
    run_build(run_dir, *magpie_sets(teacher_server), server=teacher_server, recipe="magpie")
    rows = datasets.load_dataset(str(run_dir / "export"), cache_dir=str(tmp_path / "hf"))
    got = [row for split in rows.values() for row in split]
    assert got, "no dialogue survived the filters"
    for row in got:
        roles = [m["role"] for m in row["messages"]]
        assert roles[0] == "user" and roles == ["user", "assistant"] * (len(roles) // 2)
        assert row["prompt"] == row["messages"][0]["content"]
        assert M.query_problem(row["prompt"], PREFIX, 4) is None
        tags = load("magpie")
        for tag in TAGS:  # Magpie's values only (a grammar enforces them), or null when the judge was unreadable
            assert row[tag] is None or row[tag] in tags[tag], (tag, row[tag])
        assert row["reward"] is None or 1 <= row["reward"] <= 9
    stages = report(run_dir)
    dialogue = stages["dialogue"]
    assert dialogue["rows_in"] == 8 and dialogue["rows_out"] + sum(dialogue["dropped"].values()) == 8
    card = (run_dir / "export" / "README.md").read_text()
    assert "<|im_start|>user" in card and "`<|im_end|>`" in card  # the pre-query text and its stop, shown
    assert "| task_category |" in card and "| reward (1-9) | mean" in card  # the tag distributions
    from pipelines.train.options import SFTOptions
    from pipelines.train.sft import train_sft

    trained = train_sft(SFTOptions(str(run_dir / "export"), max_steps=1, max_length=128, batch_size=1))
    assert (Path(trained["output_dir"]) / "tokenizer_config.json").exists()  # pipelines.train sft takes the export
    before = requests_in(run_dir)
    again = run_build(run_dir, *magpie_sets(teacher_server), server=teacher_server, recipe="magpie",
                      extra=("--fresh",))
    assert requests_in(run_dir) == before and "requests 0" in again.stdout  # a rerun asks nothing anew


def test_a_killed_magpie_build_resumes_where_it_stopped(tmp_path, teacher_server):
    run_dir = tmp_path / "killed"
    sets = magpie_sets(teacher_server, "n_queries=34", "turns=1", "tags=false")  # a batch of 32, then 2
    cmd = build_cmd(run_dir, *sets, server=teacher_server, recipe="magpie")
    parts = kill_after_first_part(cmd, run_dir / "01_dialogue")
    kept = [p.stat().st_mtime_ns for p in parts]
    run_build(run_dir, *sets, server=teacher_server, recipe="magpie")
    assert [p.stat().st_mtime_ns for p in parts] == kept  # finished batches were not redone
    assert report(run_dir)["dialogue"]["rows_in"] == 34


def test_a_chat_only_endpoint_is_told_apart(tmp_path):
    chat_only = lambda path: 404 if path.endswith("/completions") and "chat" not in path else 200  # noqa: E731
    with error_endpoint(chat_only, "This is a chat model and not supported in the v1/completions endpoint") as url:
        proc = run_build(tmp_path / "run", f"teacher.base_url={url}", "teacher.model=gpt-x", f"chat_template={CHATML}",
                         "n_queries=2", "tags=false", recipe="magpie", check=False)
    assert proc.returncode == 2 and "raw text completions" in proc.stderr and "Traceback" not in proc.stderr
