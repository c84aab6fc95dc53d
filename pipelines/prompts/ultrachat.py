"""Prompt builders, parsers and guards for UltraChat-style dialogues (Ding et al., 2023, arXiv:2305.14233).

Builders return chat messages from the text in `ultrachat.yaml`; parsers turn the teacher's text into one clean turn;
guards return a drop reason or None. They are separate so that each can be tested, and so that a parser change reuses
cached answers.

Tuned on SmolLM2-135M, which (measured) wraps questions in chatter ("I'm glad you asked. Could you ...?"),
ignores `stop`, writes the text itself when asked for a writing request, and drifts to the few-shot topics.
Hence: few-shot turns instead of instructions, first line only, the question sentence extracted, and an
on-topic check. A stronger teacher passes the same guards without change.
"""

from __future__ import annotations

import difflib
import re

from pipelines.prompts import load
from pipelines.teacher.guards import AI_TALK, echoes, is_looping, trim_cut_answer

PROMPT_FILE = "prompts/ultrachat.yaml"
TEXT = load("ultrachat")
REQUEST_START = re.compile(
    r"^(please|(can|could|would|will) you|write|compose|draft|create|help|give|tell|explain|summari[sz]e|"
    r"describe|suggest|list|make|generate|rewrite|translate|outline|compare|i need|i want|i'd like)\b", re.I)
WORD = re.compile(r"[a-z]{4,}")
STOPWORDS = set("about after again also been before being between could does doing from have here into just "
                "like make more most much only other over said same should some such than that their them then "
                "there these they this those very what when where which while will with would your you're".split())

OPENING_SHOTS = {sector: (p["system"], [(shot["user"], shot["assistant"]) for shot in p["shots"]], p["request"])
                 for sector, p in TEXT["opening"].items()}
SIMULATOR_SHOTS = [(shot["user"], shot["assistant"]) for shot in TEXT["simulator"]["shots"]]
SHOWN_CHARS = 600  # the simulator sees the last exchange, clipped: prefill is the embedded server's bottleneck


def build_opening(sector: str, seed: str) -> list[dict]:
    """Few-shot messages asking for the first user turn of a dialogue in `sector`."""
    system, shots, template = OPENING_SHOTS[sector]
    messages = [{"role": "system", "content": system}]
    for prompt, answer in shots:
        messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return messages + [{"role": "user", "content": template.format(seed=seed)}]


def opening_turn(sector: str, seed: str, request: str) -> str:
    """The first user turn: the request, after the passage it is about in the materials sector (as in UltraChat)."""
    return f"{seed}\n\n{request}" if sector == "materials" else request


def transcript(dialogue: list[dict]) -> str:
    return "\n\n".join(("User: " if m["role"] == "user" else "Assistant: ") + m["content"] for m in dialogue)


SIMULATOR_ROLE = TEXT["simulator"]["role"]
SIMULATOR_RULES = TEXT["simulator"]["rules"]
NEXT_QUESTION = TEXT["simulator"]["next_question"]


def build_user_turn(dialogue: list[dict], persona: str) -> list[dict]:
    """Messages asking the simulator for the next user turn. The simulator is a separate chat whose assistant
    plays the user, shown the dialogue's last exchange as text (the dialogue's roles are never swapped)."""
    messages = [{"role": "system", "content": f"{SIMULATOR_ROLE} {persona} {SIMULATOR_RULES}"}]
    for shown, question in SIMULATOR_SHOTS:
        messages += [{"role": "user", "content": f"{shown}\n\n{NEXT_QUESTION}"},
                     {"role": "assistant", "content": question}]
    last = [{**m, "content": clip(m["content"], SHOWN_CHARS)} for m in dialogue[-2:]]
    return messages + [{"role": "user", "content": f"{transcript(last)}\n\n{NEXT_QUESTION}"}]


def clip(text: str, limit: int) -> str:
    """Cut `text` at a word boundary to at most `limit` characters, marking the cut with '...'."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " ..."


def parse_user_turn(text: str) -> str:
    """First non-empty line, label and quotes removed, the question sentence kept if there is one.

    'I\\'m glad you asked. Could you give an example?\\nMore' -> 'Could you give an example?'
    'A curious person might ask: "Why is it blue?"' -> 'Why is it blue?'
    """
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    line = re.sub(r"^(\*\*)?(user|question|request|you)\s*:\s*(\*\*)?", "", line, flags=re.I).strip()
    quoted = re.findall(r"[\"\u201c]([^\"\u201d]{8,}\?)[\"\u201d]", line)
    if quoted:
        return quoted[0].strip()
    sentences = re.split(r"(?<=[.!?])\s+", line)
    questions = [s for s in sentences if s.endswith("?")]
    if questions:
        return questions[0].strip().strip("\"'")
    return line.strip("\"'")


def parse_assistant_turn(text: str, finish_reason: str | None) -> str:
    """Strip the answer; if it was cut by max_tokens, trim it back to its last full sentence."""
    return trim_cut_answer(text, finish_reason)


def check_user_turn(turn: str, dialogue: list[dict]) -> str | None:
    """Reason the simulated user turn is unusable, or None."""
    if len(turn.split()) < 3:
        return "empty_turn: user turn has fewer than 3 words"
    if any(echoes(turn, own) for own in (NEXT_QUESTION, SIMULATOR_ROLE, SIMULATOR_RULES)):
        return "prompt_echo: user turn repeats the simulator's instructions"
    if not is_question_or_request(turn):
        return "not_a_question: user turn answers instead of asking"
    if len(turn.split()) > 80:
        return "not_a_question: user turn is a long statement"
    for earlier in dialogue:
        if echoes(turn, earlier["content"]):
            return f"repeated_turn: user turn repeats an earlier {earlier['role']} turn"
    if dialogue and not _content_words(turn) & _content_words(transcript(dialogue)):
        return "off_topic: user turn shares no content word with the dialogue"
    return None


def is_question_or_request(turn: str) -> bool:
    """'How does it work?' and 'Write a poem about rain.' ask; 'What a great idea! Here it is:' does not."""
    if turn.endswith("?"):
        return True
    return bool(REQUEST_START.match(turn)) and turn.endswith((".", "!"))


def check_on_topic(turn: str, seed: str) -> str | None:
    """The opening turn must share a content word with its seed (topic, writing type or material)."""
    if _content_words(seed) and not _content_words(turn) & _content_words(seed):
        return "off_topic: opening turn shares no content word with its seed"
    return None


def check_assistant_turn(turn: str, dialogue: list[dict]) -> str | None:
    if len(turn.split()) < 3:
        return "empty_turn: assistant turn has fewer than 3 words"
    if AI_TALK.search(turn):
        return "refusal: assistant turn refuses or talks about being an AI"
    if is_looping(turn):
        return "repeated_turn: assistant turn loops on one sentence"
    for earlier in dialogue:
        if earlier["role"] == "assistant" and difflib.SequenceMatcher(None, turn, earlier["content"]).ratio() > 0.8:
            return "repeated_turn: assistant turn repeats an earlier answer"
    return None


def _content_words(text: str) -> set[str]:
    return {w for w in WORD.findall(text.lower()) if w not in STOPWORDS}
