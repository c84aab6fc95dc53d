"""What a format module is, and the items it yields.

A format module under `connectors/` has:
- `NAME` (used in `source` and in `?format=`), and the kind of item it yields: `KIND` ("conversation",
  "preference" or "text"), or `KINDS` for a format that can yield several (`connectors.detect.kinds` reads either);
- optionally `CHAT_LOG = True` when real users wrote it (redacted by default);
- `matches(record) -> bool`: does a record look like this format (used by `connectors.detect`);
- `convert(record) -> list[item]`, raising `RecordError(reason)` for a record it cannot use;
- optionally `convert_all(raws, kind) -> Iterator[(Raw, list[item] | RecordError)]` when records must be seen together
  (OpenAssistant trees, HelpSteer responses to the same prompt).

Items are plain dicts: a conversation `{"messages": [...], "meta": {...}}`; a pair `{"prompt": [messages ending
with a user turn], "chosen": str, "rejected": str, "score_chosen", "score_rejected", "chosen_model",
"rejected_model", "completions", "meta"}`; a text `{"text": str, "meta": {...}}`.
"""

from __future__ import annotations

from typing import Iterator

from connectors.streams import Raw


class RecordError(Exception):
    """A record that does not convert; the message is the reason ("category: detail")."""


def message(role: str, content) -> dict:
    if not isinstance(content, str):
        raise RecordError(f"bad_field: {role} content is {type(content).__name__}, not text")
    return {"role": role, "content": content}


def text_field(record: dict, key: str, required: bool = True) -> str:
    value = record.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise RecordError(f"bad_field: '{key}' is {'missing' if value is None else type(value).__name__}, not text")
    return value


def extras(record: dict, used: tuple[str, ...]) -> dict:
    """The fields a converter did not use, kept in `meta`."""
    return {k: v for k, v in record.items() if k not in used}


def pair(prompt: list[dict], chosen: str, rejected: str, meta: dict, *, score_chosen=None, score_rejected=None,
         chosen_model=None, rejected_model=None, completions=()) -> dict:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "score_chosen": score_chosen,
            "score_rejected": score_rejected, "chosen_model": chosen_model, "rejected_model": rejected_model,
            "completions": list(completions), "meta": meta}


def completion(content: str, model=None, principle=None, ratings=(), overall=None) -> dict:
    return {"model": model, "principle": principle, "content": content, "ratings": list(ratings), "overall": overall}


def convert_each(convert, raws: Iterator[Raw]) -> Iterator[tuple[Raw, list | RecordError]]:
    """The default `convert_all`: `convert` one record at a time."""
    for raw in raws:
        if raw.record is None:
            yield raw, RecordError(raw.error)
            continue
        try:
            yield raw, convert(raw.record)
        except RecordError as exc:
            yield raw, exc
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            yield raw, RecordError(f"bad_record: {type(exc).__name__}: {exc}")
