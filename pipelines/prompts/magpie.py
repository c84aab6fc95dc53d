"""Magpie's pre-query text (Xu et al., 2024, arXiv:2406.08464) and the filters of the queries it yields.

An aligned model given only its chat template's text up to where a user message begins writes a plausible user
query. `pre_query(template)` renders a conversation whose user message is a sentinel (with transformers' own chat
template renderer, so any template works) and cuts before the sentinel; for a next turn (Magpie-MT) it renders the
conversation so far and cuts before a sentinel user message after it. `stop_of(template)` is the template's
end-of-turn marker (`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`): the text between the sentinel and the next
turn's header, up to its first special token.

ChatML:  '<|im_start|>system\\n...<|im_end|>\\n<|im_start|>user\\n'
Llama-3: '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\n'
Gemma:   '<bos><start_of_turn>user\\n'
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pipelines.prompts import fill, load
from pipelines.teacher.wire import Request
from pipelines.teacher.guards import AI_TALK, REFUSAL, echoes

SENTINEL = "MAGPIEQUERYSENTINEL7f3a"
SPECIAL = re.compile(r"<\|?[\w./-]+\|?>|\[/?INST\]")
WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
REQUEST = re.compile(r"\?|^(please|can|could|would|will|how|what|why|when|where|which|who|whom|whose|is|are|"
                     r"do|does|did|should|write|create|explain|describe|give|list|make|help|implement|generate|"
                     r"compose|draft|summari[sz]e|translate|find|show|tell|suggest|design|build|convert|calculate|"
                     r"compute|solve|fix|debug|rewrite|improve|compare|i need|i want|i'd like|i have|i am|i'm)\b",
                     re.I | re.M)


ANSWER_REFUSAL = re.compile(r"\bas an? (ai|artificial intelligence)\b[^.!?]{0,40}\b(model|assistant)\b|"
                            r"\bi (cannot|can't|can not|am unable to|am not able to) (provide|help|answer|assist)",
                            re.I)  # what answers of small models say when they decline, beyond the shared guards


def answer_problem(answer: str) -> str | None:
    """Why an answer ends the dialogue, or None."""
    if len(answer.split()) < 3:
        return "empty_answer: fewer than 3 words"
    if AI_TALK.search(answer) or REFUSAL.search(answer) or ANSWER_REFUSAL.search(answer):
        return "refusal: the answer refuses or talks about being an AI"
    return None


def load_template(path: str) -> tuple[str, dict]:
    """A chat template and its special tokens from a `.jinja` file or a `tokenizer_config.json`."""
    text = Path(path).read_text(encoding="utf-8")
    if not path.endswith(".json"):
        return text, {}
    config = json.loads(text)
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), template[0]["template"])
    if not template:
        raise ValueError(f"{path} has no chat_template")
    tokens = {k: (v["content"] if isinstance(v, dict) else v) for k, v in config.items()
              if k in ("bos_token", "eos_token") and v}
    return template, tokens


def render(template: str, messages: list[dict], tokens: dict, generation: bool = False) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(conversations=[messages], chat_template=template,
                                        add_generation_prompt=generation, **{"bos_token": "", "eos_token": "",
                                                                             **tokens})
    return rendered[0]


def pre_query(template: str, tokens: dict, system: str = "", history: list[dict] | None = None) -> str:
    """The template's text up to where the next user message begins (after `history`, under `system`)."""
    messages = ([{"role": "system", "content": system}] if system else []) + list(history or [])
    text = render(template, messages + [{"role": "user", "content": SENTINEL}], tokens)
    if SENTINEL not in text:
        raise ValueError("the chat template does not show the user's message as it is")
    return text[: text.index(SENTINEL)]


def stop_of(template: str, tokens: dict) -> str:
    """The end-of-turn marker after a user message: the first special token between it and the assistant's turn."""
    text = render(template, [{"role": "user", "content": SENTINEL}], tokens, generation=True)
    after = text[text.index(SENTINEL) + len(SENTINEL):]
    match = SPECIAL.search(after)
    return match.group(0) if match else after.strip().split("\n")[0]


LABEL = re.compile(r"^\s*(\*\*)?(q|question|query|user|human|prompt|instruction)\s*(\*\*)?\s*[:：]\s*", re.I)
SELF_ANSWER = re.compile(r"(?:\n|(?<=[?.!])\s)\s*(\*\*)?(a|answer|assistant|response|ai)\s*(\*\*)?\s*[:：]\s", re.I)


def clean_query(text: str, stop: str) -> str:
    """The query as the model wrote it: cut at an end-of-turn marker it wrote anyway, a leading `Q:` or `User:`
    label removed, and an answer it went on to write itself (`... A: ...`) cut off.

    'Q: What is the capital of France? A: Paris' -> 'What is the capital of France?'
    """
    text = text.split(stop)[0] if stop else text
    text = LABEL.sub("", text.strip(), count=1)
    return SELF_ANSWER.split(text, maxsplit=1)[0].strip()


def assistant_names(prefix: str) -> set[str]:
    """Names the template's own text gives the assistant ('Qwen', 'SmolLM'): capitalised words of 4+ letters."""
    plain = SPECIAL.sub(" ", prefix)
    return {w for w in re.findall(r"\b[A-Z][\w-]{3,}\b", plain) if w.lower() not in ("user", "system", "assistant")}


def query_problem(query: str, prefix: str, min_words: int) -> str | None:
    """Why a generated query is not kept, or None."""
    words = WORD.findall(query)
    if len(words) < min_words:
        return f"too_short: fewer than {min_words} words"
    lines = (line.strip() for part in SPECIAL.split(prefix) for line in part.splitlines())
    if SPECIAL.search(query) or any(len(line) > 12 and line in query for line in lines):
        return "template_echo: the query copies the chat template's text"
    first = query.split()[0].strip(",:;.!") if query.split() else ""
    if AI_TALK.search(query) or echoes(query.lower(), prefix.lower()) or first in assistant_names(prefix):
        return "not_a_user: the query talks as or about the assistant"
    if not REQUEST.search(query):
        return "not_a_request: no question or request"
    return None


TAGS = ("input_quality", "difficulty", "task_category", "safety")


def tag_request(query: str) -> Request:
    """The judge's tags of a first query, as JSON limited to Magpie's released values (`magpie.yaml`)."""
    text = load("magpie")
    schema = {"type": "object", "required": list(TAGS), "additionalProperties": False,
              "properties": {tag: {"enum": text[tag]} for tag in TAGS}}
    return Request([{"role": "system", "content": text["system"]},
                    {"role": "user", "content": fill(text["request"], query=query)}],
                   {"max_tokens": 96, "temperature": 0.0}, schema=schema)
