"""Grounded question-answer pairs from documents, as RAG-style SFT data is made.

Chunk:          id, text -> id, text, meta (a document longer than `max_chars` cut into passages at paragraph,
                then sentence, then word boundaries; `meta` keeps the document's id and the passage's number)
AskQuestion:    id, text -> question (one question the passage answers)
AnswerFromText: id, text, question -> messages (the document and question as the user turn, the answer), support

A question that is empty, not a question, too long or a copied sentence of the passage is asked again (`retries`),
then dropped with its reason. An answer is kept when at least `min_support` of its content words occur in the
passage (`ungrounded` otherwise; a short answer with no such word, "No.", has `support` null and is kept), and
dropped when it refuses, loops, repeats the question, or says the document does not answer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import polars as pl

from pipelines.core.config import max_tokens_setting
from pipelines.core.stage import MESSAGES, Context, MapStage
from pipelines.prompts import doc_qa as D
from pipelines.teacher.guards import AI_TALK, echoes_prompt, is_looping, trim_cut_answer
from pipelines.teacher.stage import Sampling, TeacherStage, Verdict
from pipelines.teacher.wire import Request, Result
from schemas import text_id

NOT_ANSWERED = ("does not answer", "doesn't answer", "does not say", "doesn't say", "not mentioned",
                "does not mention", "no information")


SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def pieces(text: str, max_chars: int) -> list[str]:
    """`text` as consecutive pieces of at most `max_chars`: whole paragraphs where they fit, else sentences, else
    runs of words (a word longer than `max_chars` is cut)."""
    out = []
    for para in (p.strip() for p in text.split("\n\n")):
        if len(para) <= max_chars:
            out += [para] if para else []
            continue
        for sentence in SENTENCE_END.split(para):
            while len(sentence) > max_chars:
                cut = sentence.rfind(" ", 0, max_chars)
                cut = cut if cut > 0 else max_chars
                out.append(sentence[:cut])
                sentence = sentence[cut:].strip()
            out += [sentence] if sentence else []
    return out


def chunks(text: str, max_chars: int) -> list[str]:
    """`text` packed into passages of at most `max_chars` from its `pieces`, in order, none empty; nothing is lost
    but the whitespace between pieces."""
    out, current = [], ""
    for piece in pieces(text, max_chars):
        joined = f"{current}\n\n{piece}" if current else piece
        if len(joined) <= max_chars:
            current = joined
        else:
            out.append(current)
            current = piece
    return out + ([current] if current else [])


@dataclass
class Chunk(MapStage):
    max_chars: int = 2000
    name = "chunk"
    requires = ("id", "text", "meta")
    provides = ("id", "text", "meta")

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        rows = []
        for row in batch.to_dicts():
            parts = chunks(row["text"], self.max_chars) if len(row["text"]) > self.max_chars else []
            ctx.count("documents_cut", len(parts) > 1)
            if len(parts) <= 1:
                rows.append(row)
                continue
            meta = json.loads(row["meta"] or "{}")
            rows += [{**row, "id": text_id(part), "text": part,
                      "meta": json.dumps({**meta, "document": row["id"], "passage": k}, ensure_ascii=False)}
                     for k, part in enumerate(parts)]
        return pl.DataFrame(rows, schema=batch.schema)


@dataclass
class DocQASampling(Sampling):
    max_tokens_question: int = max_tokens_setting(48, "tokens per question")
    max_tokens_answer: int = max_tokens_setting(160, "tokens per answer")


def question_problem(question: str, passage: str) -> str | None:
    if not question:
        return "no_question: empty"
    if not question.endswith("?"):
        return "not_a_question: does not end with '?'"
    if len(question.split()) > 40:
        return "too_long: more than 40 words"
    if question.rstrip("?").strip().lower() in passage.lower():
        return "copied: the question is a sentence of the passage"
    return None


@dataclass
class AskQuestion(TeacherStage):
    sampling: DocQASampling = field(default_factory=DocQASampling)
    retries: int = 1
    name = "question"
    requires = ("id", "text")
    provides = ("question",)
    prompt_files = (D.PROMPT_FILE,)

    def requests(self, row: dict, attempt: int) -> list[Request]:
        return [Request(D.question_messages(row["text"]),
                        self.sampling.request_params(self.sampling.max_tokens_question, f"{row['id']}/q/{attempt}"))]

    def accept(self, row: dict, results: list[Result]) -> Verdict:
        question = D.clean_question(results[0].text)
        return Verdict({"question": question}, question_problem(question, row["text"]))


@dataclass
class AnswerFromText(TeacherStage):
    sampling: DocQASampling = field(default_factory=DocQASampling)
    min_support: float = 0.6
    retries: int = 1
    name = "answer"
    requires = ("id", "text", "question")
    provides = ("messages", "support")
    dtypes = {"messages": MESSAGES, "support": pl.Float64}
    prompt_files = (D.PROMPT_FILE,)

    def requests(self, row: dict, attempt: int) -> list[Request]:
        return [Request(D.answer_messages(row["text"], row["question"]),
                        self.sampling.request_params(self.sampling.max_tokens_answer, f"{row['id']}/a/{attempt}"))]

    def accept(self, row: dict, results: list[Result]) -> Verdict:
        answer = trim_cut_answer(results[0].text or "", results[0].finish_reason)
        supported = D.support(answer, row["text"])
        messages = [*D.answer_messages(row["text"], row["question"])[1:], {"role": "assistant", "content": answer}]
        return Verdict({"messages": messages, "support": None if supported is None else round(supported, 3)},
                       self.problem(answer, row["question"], supported))

    def problem(self, answer: str, question: str, supported: float | None) -> str | None:
        if not answer:
            return "empty_answer: no text"
        if echoes_prompt(answer, question):
            return "echo: the answer repeats the question"
        if AI_TALK.search(answer) or any(p in answer.lower() for p in NOT_ANSWERED):
            return "not_answered: the answer refuses or says the document does not answer"
        if is_looping(answer):
            return "repeated: the answer loops"
        if supported is not None and supported < self.min_support:
            return f"ungrounded: {supported:.0%} of its words are in the passage (< {self.min_support:.0%})"
        return None
