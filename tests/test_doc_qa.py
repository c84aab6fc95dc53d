"""The doc_qa recipe on the embedded SmolLM2: a question per passage, answers kept only when the passage supports
them (re-measured here), bad records quarantined with their line, and an export `datasets` loads."""

from __future__ import annotations

import json
import re

import datasets
import polars as pl

from conftest import ROOT, report, run_build
from pipelines.prompts.doc_qa import support
from pipelines.stages.doc_qa import chunks, question_problem

PASSAGES = ROOT / "pipelines" / "data" / "doc_passages.jsonl"


def test_doc_qa_keeps_answers_the_passage_supports(tmp_path, teacher_server):
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(b'{"text": "Tardigrades survive drying out by entering a state called a tun."}\n'
                      b'\xff\xfe not utf-8\n{"text": ""}\n')
    run_dir = tmp_path / "run"
    run_build(run_dir, f"sources={PASSAGES},{mixed}", "min_support=0.4", server=teacher_server, recipe="doc_qa")
    stages = report(run_dir)
    assert stages["ingest"]["rows_out"] == 13 and stages["question"]["rows_in"] == 13
    answered = stages["answer"]
    assert set(answered["dropped"]) <= {"ungrounded", "not_answered", "echo", "repeated", "empty_answer",
                                        "request_failed"}
    assert answered["rows_out"] + sum(answered["dropped"].values()) == stages["question"]["rows_out"]
    quarantine = pl.read_parquet(run_dir / "quarantine.parquet")
    assert {"mixed.jsonl:2", "mixed.jsonl:3"} <= {str(x).rsplit("/", 1)[-1] for x in quarantine["locator"]}
    ungrounded = quarantine.filter(pl.col("reason").str.starts_with("ungrounded"))
    assert all(float(r.split(": ")[1].split("%")[0]) < 40 for r in ungrounded["reason"])
    passages = [json.loads(line)["text"] for line in PASSAGES.read_text().splitlines()]
    rows = datasets.load_dataset(str(run_dir / "export"), cache_dir=str(tmp_path / "hf"))
    got = [row for split in rows.values() for row in split]
    assert len({r["prompt_id"] for r in got}) == answered["rows_out"] > 0
    for row in got:  # the user turn: one of the documents, then a question it answers; the answer re-measured
        user, answer = row["messages"][0]["content"], row["messages"][1]["content"]
        passage = next(p for p in passages + ["Tardigrades survive drying out by entering a state called a tun."] if p in user)
        question = user.rsplit("Question: ", 1)[1]
        assert question_problem(question, passage) is None
        measured = support(answer, passage)
        assert row["support"] == (None if measured is None else round(measured, 3))
        assert measured is None or measured >= 0.4
    card = (run_dir / "export" / "README.md").read_text()
    assert "at least 0.4 of its" in card and "doc_passages.jsonl" in card


def test_long_documents_are_cut_into_passages_that_lose_no_text():
    sentences = [f"Sentence {k} says that the mill by the river ground {k} sacks of wheat that day." for k in range(300)]
    document = " ".join(sentences[:150]) + "\n\n" + "short paragraph.\n\n" + " ".join(sentences[150:])
    document += "\n\n" + "x" * 4500  # one word longer than a passage
    passages = chunks(document, 1500)
    assert all(0 < len(p) <= 1500 for p in passages) and len(passages) >= len(document) // 1500
    assert re.sub(r"\s+", "", "".join(passages)) == re.sub(r"\s+", "", document)
    assert any(p.endswith("wheat that day.") for p in passages)  # cut at sentence ends where one is near
    assert chunks("one short passage.", 1500) == ["one short passage."]
