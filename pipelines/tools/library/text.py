"""Text utilities: counts, case and search, on text given in the call."""

import re

TEXT = {"type": "string", "maxLength": 20000}
TOOLS = [
    {"type": "function", "function": {
        "name": "count_text", "description": "Count the characters, words, sentences and lines of a text.",
        "parameters": {"type": "object", "properties": {"text": TEXT}, "required": ["text"],
                       "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "change_case", "description": "Rewrite a text in upper, lower, title or snake case.",
        "parameters": {"type": "object", "properties": {
            "text": TEXT, "case": {"enum": ["upper", "lower", "title", "snake"]}},
            "required": ["text", "case"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "count_occurrences", "description": "How many times a word or phrase occurs in a text, ignoring case.",
        "parameters": {"type": "object", "properties": {"text": TEXT, "phrase": {"type": "string", "minLength": 1,
                                                                                   "maxLength": 200}},
                       "required": ["text", "phrase"], "additionalProperties": False}}},
]


def count_text(text: str) -> dict:
    return {"characters": len(text), "words": len(text.split()),
            "sentences": len([s for s in re.split(r"[.!?]+", text) if s.strip()]), "lines": len(text.splitlines())}


def change_case(text: str, case: str) -> dict:
    if case == "snake":
        result = "_".join(re.findall(r"[a-z0-9]+", text.lower()))
    else:
        result = {"upper": text.upper, "lower": text.lower, "title": text.title}[case]()
    return {"case": case, "result": result}


def count_occurrences(text: str, phrase: str) -> dict:
    return {"phrase": phrase, "count": text.lower().count(phrase.lower())}
