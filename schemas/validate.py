"""Record validation: JSON Schema first, then the turn-order rules JSON Schema cannot express.

Running `jsonschema` on every record costs about 10 us per record, more than parsing it. So a conversation is first
put through `_plainly_valid`, a direct check of the same rules with the limits read from the schema file; only a
record it does not pass goes through `jsonschema`, which gives the reason (for a bad message, `jsonschema` checks
that message alone against the message schema). `tests/test_schemas.py` checks that the two agree.
"""

from __future__ import annotations

import re
from functools import cache

import jsonschema
from referencing import Registry, Resource

HEX64 = re.compile(r"[0-9a-f]{64}")
SIZE_LIMITS = {"maxItems": "items", "maxLength": "characters"}


@cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    from schemas import json_schema

    registry = Registry().with_resources(
        (f"{n}.schema.json", Resource.from_contents(json_schema(n))) for n in ("conversation", "preference", "text"))
    return jsonschema.Draft202012Validator(json_schema(name), registry=registry)


@cache
def conversation_limits() -> tuple:
    """(roles, min messages, max messages, min content length, max content length) from conversation.schema.json."""
    from schemas import json_schema

    schema = json_schema("conversation")
    messages = schema["properties"]["messages"]
    content = schema["$defs"]["message"]["properties"]["content"]
    roles = frozenset(schema["$defs"]["message"]["properties"]["role"]["enum"])
    assert content["pattern"] == r"\S", "update _plainly_valid when the content pattern changes"
    return roles, messages["minItems"], messages["maxItems"], content["minLength"], content["maxLength"]


def _plainly_valid_messages(messages) -> bool:
    _, min_items, max_items, _, _ = conversation_limits()
    if type(messages) is not list or not min_items <= len(messages) <= max_items:
        return False
    return all(_plainly_valid_message(m) for m in messages)


def _plainly_valid_message(m) -> bool:
    roles, _, _, min_len, max_len = conversation_limits()
    if type(m) is not dict or m.get("role") not in roles:
        return False
    content = m.get("content")
    return type(content) is str and min_len <= len(content) <= max_len and not content.isspace()


@cache
def _message_validator() -> jsonschema.Draft202012Validator:
    from schemas import json_schema

    return jsonschema.Draft202012Validator(json_schema("conversation")["$defs"]["message"])


def _first_message_error(messages) -> str | None:
    """The reason for the first bad message, from validating that message alone (much faster than the whole
    record); None when the list itself is the problem."""
    _, min_items, max_items, _, _ = conversation_limits()
    if type(messages) is not list or not min_items <= len(messages) <= max_items:
        return None
    for i, m in enumerate(messages):
        if not _plainly_valid_message(m):
            error = jsonschema.exceptions.best_match(_message_validator().iter_errors(m))
            if error is not None:
                where = "/".join(str(p) for p in ("messages", i, *error.absolute_path))
                return f"schema: {where}: {_describe(error)}"
    return None


def _plainly_valid(record: dict) -> bool:
    """True when `record` certainly passes conversation.schema.json (False: ask jsonschema why not)."""
    return _plainly_valid_fields(record) and _plainly_valid_messages(record.get("messages"))


def _plainly_valid_fields(record: dict) -> bool:
    return (type(record.get("id")) is str and HEX64.fullmatch(record["id"]) is not None
            and type(record.get("source")) is str and record["source"] != "" and type(record.get("meta")) is str)


def _plainly_valid_preference(record: dict) -> bool:
    """True when `record` certainly passes preference.schema.json, for pairs without completions."""
    prompt_id = record.get("prompt_id")
    return (_plainly_valid_fields(record) and type(prompt_id) is str and HEX64.fullmatch(prompt_id) is not None
            and type(record.get("prompt")) is str and not record["prompt"].isspace() and record["prompt"] != ""
            and all(_plainly_valid_messages(record.get(k)) for k in ("chosen", "rejected", "messages"))
            and all(record.get(k) is None or type(record[k]) in (int, float) for k in ("score_chosen", "score_rejected"))
            and all(record.get(k) is None or type(record[k]) is str for k in ("chosen_model", "rejected_model"))
            and record.get("completions") == [])


def _schema_error(name: str, record: dict) -> str | None:
    error = jsonschema.exceptions.best_match(_validator(name).iter_errors(record))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "record"
    return f"schema: {where}: {_describe(error)}"


def _describe(error: jsonschema.ValidationError) -> str:
    """jsonschema's message, but a size limit broken is said in numbers (its message starts with the whole value)."""
    if error.validator in SIZE_LIMITS and isinstance(error.instance, (str, list)):
        return f"{len(error.instance):,} {SIZE_LIMITS[error.validator]} > {error.validator_value:,}"
    return error.message[:200]


def turn_order_problem(messages: list[dict]) -> str | None:
    """[system?] then user and assistant turns alternating, ending with assistant. Tool results may follow an
    assistant turn (its tool calls), and the assistant goes on after them: user, assistant, tool, assistant."""
    roles = [m["role"] for m in messages]
    start = 1 if roles[0] == "system" else 0
    expected = "user"
    for i, role in enumerate(roles[start:], start):
        if role == "tool":
            if i == start or roles[i - 1] not in ("assistant", "tool"):
                return f"turn_order: a tool turn at message {i} does not follow an assistant turn"
            expected = "assistant"
            continue
        if role != expected:
            return f"turn_order: turns do not alternate at message {i}: {role} where {expected} was expected"
        expected = "assistant" if role == "user" else "user"
    if roles[-1] != "assistant":
        return "turn_order: the conversation does not end with an assistant turn"
    return None


def check_conversation(record: dict) -> str | None:
    """Return None if `record` is a valid SFT conversation, else a short reason.

    [system?] user assistant user assistant ... ending with assistant -> None
    [user, user, assistant] -> "turn_order: turns do not alternate at message 1: user where assistant was expected"
    Reasons read "category: detail", the category being `schema` or `turn_order`.
    """
    if not _plainly_valid(record):
        reason = (_plainly_valid_fields(record) and _first_message_error(record.get("messages"))) \
            or _schema_error("conversation", record)
        if reason:
            return reason
    return turn_order_problem(record["messages"])


def check_preference(record: dict) -> str | None:
    """Return None if `record` is a valid preference pair, else a short reason.

    Both sides must be valid conversations that share every turn but the final assistant answer, and differ there.
    """
    if not _plainly_valid_preference(record):
        reason = _schema_error("preference", record)
        if reason:
            return reason
    chosen, rejected = record["chosen"], record["rejected"]
    for side in ("chosen", "rejected"):
        problem = turn_order_problem(record[side])
        if problem:
            return problem.replace("turn_order: ", f"turn_order: {side}: ", 1)
    if chosen[:-1] != rejected[:-1]:
        return "prompt_mismatch: chosen and rejected do not share the same prompt turns"
    if chosen[-1]["content"].strip() == rejected[-1]["content"].strip():
        return "identical: chosen and rejected answers are the same text"
    return None


def check_text(record: dict) -> str | None:
    """Return None if `record` is a valid text document, else a short reason."""
    return _schema_error("text", record)
