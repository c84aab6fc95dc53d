"""Requests and readers of the doc_qa recipe (`doc_qa.yaml`): a question a passage answers, then its answer from the
passage alone, and how much of that answer the passage supports."""

from __future__ import annotations

import re

from pipelines.prompts import fill, load

PROMPT_FILE = "prompts/doc_qa.yaml"
WORD = re.compile(r"[^\W_]+", re.UNICODE)
LABEL = re.compile(r"^\s*(\*\*)?(q|a|question)\s*(\*\*)?\s*[:：]\s*", re.I)


def question_messages(passage: str) -> list[dict]:
    text = load("doc_qa")["question"]
    return [{"role": "system", "content": text["system"]},
            {"role": "user", "content": fill(text["request"], passage=passage)}]


def answer_messages(passage: str, question: str) -> list[dict]:
    """The training prompt too: the user turn carries the document and the question, as RAG-style SFT data does."""
    text = load("doc_qa")["answer"]
    return [{"role": "system", "content": text["system"]},
            {"role": "user", "content": fill(text["request"], passage=passage, question=question)}]


def clean_question(text: str) -> str:
    """The first line of an answer, without a `Question:` label or quotes."""
    line = next((x for x in (text or "").strip().splitlines() if x.strip()), "")
    return LABEL.sub("", line).strip().strip('"').strip()


def support(answer: str, passage: str) -> float | None:
    """The share of the answer's content words (4+ letters) that occur in the passage: 1.0 when every one does;
    None for a short answer with none ("No.", "1,230 km"), which word overlap cannot judge."""
    words = [w for w in WORD.findall(answer.lower()) if len(w) >= 4]
    found = set(WORD.findall(passage.lower()))
    return sum(w in found for w in words) / len(words) if words else None
