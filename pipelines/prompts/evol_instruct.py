"""Evol-Instruct's requests (Xu et al., WizardLM, 2023, arXiv:2304.12244) and its elimination rules.

An instruction evolves by one operation: in depth (`add_constraints`, `deepen`, `concretize`, `increase_reasoning`,
`complicate_input`: the instruction made harder) or in breadth (`breadth`: a new instruction of the same domain and a
rarer topic). The text lives in `evol_instruct.yaml`. An evolution is eliminated, as the paper does, when:

1. it gains nothing over its parent (`no_gain`: the judge finds the two equal, or the text is the parent's again);
2. its answer says sorry in under 80 words (`answer_sorry`), or is very brief (`answer_brief`);
3. it, or its answer, is only punctuation and stop words (`no_content`, `answer_no_content`);
4. it copies the template's words (`template_copy`: "#Rewritten Prompt#", "given prompt").

We add: nothing written (`empty`), a rewrite that answers instead ("Certainly! Saving a seat means ...":
`answered`), cut by max_tokens (`truncated`), too long (`too_long`), an answer that loops
(`answer_loops`), and a short answer that asks for the data the instruction names but lost in the rewrite
(`answer_asks_input`: "Please provide the table of reviews.").
"""

from __future__ import annotations

import re

from pipelines.prompts import fill, load
from pipelines.teacher.guards import AI_TALK, REFUSAL, STOP_WORDS, is_looping

PROMPT_FILE = "prompts/evol_instruct.yaml"
TEXT = load("evol_instruct")
IN_DEPTH = tuple(TEXT["methods"])
OPERATIONS = (*IN_DEPTH, "breadth")
REASONS = ("empty", "template_copy", "no_content", "answered", "no_gain", "too_long", "truncated", "answer_no_content",
           "answer_sorry", "answer_asks_input", "answer_brief", "answer_loops", "request_failed")  # drop categories
HEADER = re.compile(r"^\s*(\*\*|#+\s*)?#?\s*(the\s+)?(rewritten|created|new|evolved)\s+(prompt|instruction)\s*#?"
                    r"\s*(\*\*)?\s*[:：]?\s*(\*\*)?\s*", re.I)  # a copy of the answer's own label, at its start
WORD = re.compile(r"[^\W_]+", re.UNICODE)
ANSWERS = re.compile(r"^\W*(certainly|sure|of course|absolutely|great question|here is|here's|here are)\b",
                     re.I)  # how an answer opens, not an instruction: the teacher answered instead of rewriting
SORRY = re.compile(r"\b(sorry|apologi[sz]e)\b", re.I)
SORRY_WORDS = 80  # the paper: an answer with "sorry" and fewer than 80 words
ASKS_INPUT = re.compile(r"\b(please|kindly|could you|can you|would you)( please)? (provide|share|give|send|paste|"
                        r"specify|supply)\b|\bi (would )?need (more|the|some) (information|details|data|text|table)",
                        re.I)  # an answer asking for the data the instruction names but does not give


def evolve_request(operation: str, prompt: str) -> list[dict]:
    """The messages asking the teacher to evolve `prompt` by `operation` (one of OPERATIONS)."""
    if operation == "breadth":
        text = fill(TEXT["in_breadth"], prompt=prompt)
    else:
        text = fill(TEXT["in_depth"], prompt=prompt, method=TEXT["methods"][operation])
    return [{"role": "system", "content": TEXT["system"]}, {"role": "user", "content": text}]


def clean_rewrite(text: str) -> tuple[str, bool]:
    """The evolved instruction without a copy of its own label ("#Rewritten Prompt#:") or quotes around it; and
    whether a label was taken off."""
    text = text.strip()
    cleaned = HEADER.sub("", text, count=1).strip()
    if len(cleaned) > 1 and cleaned[0] == cleaned[-1] and cleaned[0] in "\"'`":
        cleaned = cleaned[1:-1].strip()
    return cleaned, cleaned != text.strip().strip("\"'`").strip()


def only_stop_words(text: str) -> bool:
    """True if the text has no word but stop words (punctuation and spaces are not words)."""
    return all(word in STOP_WORDS for word in WORD.findall(text.lower()))


def normalized(text: str) -> list[str]:
    return WORD.findall(text.lower())


def instruction_problem(text: str, parent: str, max_words: int, cut: bool) -> str | None:
    """Why an evolved instruction is eliminated before it is judged (rules 1, 3 and 4, and ours), or None."""
    if not text:
        return "empty: no instruction written"
    lower = re.sub(r"\bthe\s+", "", text.lower())
    copied = next((w for w in TEXT["template_words"] if w in lower), None)
    if copied:
        return f"template_copy: it copies {copied!r} from the template"
    if only_stop_words(text):
        return "no_content: only punctuation and stop words"
    if ANSWERS.search(text):
        return "answered: the rewrite answers the instruction instead of rewriting it"
    if normalized(text) == normalized(parent):
        return "no_gain: the same text as its parent"
    if len(text.split()) > max_words:
        return f"too_long: more than {max_words} words"
    if cut:
        return "truncated: cut by max_tokens"
    return None


def answer_problem(answer: str, min_words: int) -> str | None:
    """Why the answer to an evolved instruction eliminates the instruction (rules 2 and 3, and loops), or None."""
    words = len(answer.split())
    if only_stop_words(answer):
        return "answer_no_content: only punctuation and stop words"
    if (SORRY.search(answer) or REFUSAL.search(answer) or AI_TALK.search(answer)) and words < SORRY_WORDS:
        return f"answer_sorry: the answer apologises or declines in {words} words"
    if ASKS_INPUT.search(answer) and words < SORRY_WORDS:
        return f"answer_asks_input: the answer asks for data the instruction does not give ({words} words)"
    if words < min_words:
        return f"answer_brief: {words} words, fewer than {min_words}"
    if is_looping(answer):
        return "answer_loops: the answer repeats itself"
    return None


EQUAL_SCHEMA = {"type": "object", "required": ["difference", "judgement"], "additionalProperties": False,
                "properties": {"difference": {"type": "string", "maxLength": 200},
                               "judgement": {"enum": ["Equal", "Not Equal"]}}}


def equal_request(parent: str, child: str) -> list[dict]:
    """Rule 1, as the paper asks it: are the two instructions equal (same constraints, depth and breadth)?"""
    return [{"role": "system", "content": TEXT["equal_system"]},
            {"role": "user", "content": fill(TEXT["equal"], first=parent, second=child)}]


def is_equal(data) -> bool | None:
    """The judge's verdict from its JSON answer; None when it cannot be read."""
    verdict = data.get("judgement") if isinstance(data, dict) else None
    return {"Equal": True, "Not Equal": False}.get(verdict)
