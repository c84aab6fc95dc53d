"""OpenAssistant (oasst1/oasst2) message rows: `{"message_id", "parent_id", "message_tree_id", "role"
("prompter" or "assistant"), "text", "rank", "lang", "deleted", "review_result", ...}`, one row per message.

Rows are gathered into trees. As conversations: every path from a root prompt to an assistant leaf (a trailing
prompter turn is cut). As preference pairs: for every prompter message with ranked assistant replies, the reply of
rank 0 is chosen against each lower-ranked sibling. Deleted messages, and replies under them, are left out with
that reason; a message whose parent is not in the file is an orphan.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterator

from connectors.base import RecordError, pair
from connectors.streams import Raw

NAME = "oasst"
CHAT_LOG = True  # real users wrote it: redacted by default
KINDS = ("conversation", "preference")
ROLES = {"prompter": "user", "assistant": "assistant"}
KEEP = ("message_id", "message_tree_id", "lang")


def matches(record: dict) -> bool:
    return "message_id" in record and "parent_id" in record and "role" in record


def convert(record: dict) -> list[dict]:
    raise RecordError("needs_tree: OpenAssistant rows are converted a whole file at a time")


def _check(raw: Raw) -> RecordError | None:
    if raw.record is None:
        return RecordError(raw.error)
    record = raw.record
    if record.get("role") not in ROLES:
        return RecordError(f"unknown_role: {record.get('role')!r}")
    if not isinstance(record.get("text"), str):
        return RecordError("bad_field: 'text' is missing or not text")
    if record.get("deleted") or record.get("review_result") is False:
        return RecordError("removed: the message is deleted or failed review")
    return None


def convert_all(raws: Iterator[Raw], kind: str) -> Iterator[tuple[Raw, list | RecordError]]:
    nodes: dict[str, Raw] = {}
    children: dict[str | None, list[str]] = defaultdict(list)
    removed: set = set()
    for raw in raws:
        problem = _check(raw)
        if problem:
            if raw.record is not None:
                removed.add(raw.record.get("message_id"))
            yield raw, problem
            continue
        nodes[raw.record["message_id"]] = raw
        children[raw.record.get("parent_id")].append(raw.record["message_id"])
    reached: set[str] = set()
    walk = _paths if kind == "conversation" else _pairs
    for root in children[None]:
        yield from walk(root, [], nodes, children, reached)
    for message_id, raw in nodes.items():
        if message_id not in reached:
            parent = raw.record.get("parent_id")
            why = "removed: under a removed message" if parent in removed or parent in nodes else "orphan"
            yield raw, RecordError(f"{why}: parent {parent}" if why == "orphan" else why)


def _turn(raw: Raw) -> dict:
    return {"role": ROLES[raw.record["role"]], "content": raw.record["text"]}


def _meta(raw: Raw) -> dict:
    return {k: raw.record.get(k) for k in KEEP if k in raw.record}


def _ranked_replies(message_id, nodes, children) -> list[Raw]:
    return sorted((nodes[c] for c in children[message_id]),
                  key=lambda r: (r.record.get("rank") is None, r.record.get("rank") or 0))


def _paths(message_id, above, nodes, children, reached):
    raw = nodes[message_id]
    reached.add(message_id)
    path = above + [raw]
    replies = _ranked_replies(message_id, nodes, children)
    for reply in replies:
        yield from _paths(reply.record["message_id"], path, nodes, children, reached)
    if not replies:
        while path and path[-1].record["role"] != "assistant":
            path = path[:-1]
        if len(path) >= 2:
            yield raw, [{"messages": [_turn(r) for r in path], "meta": _meta(path[-1])}]
        else:
            yield raw, RecordError("too_short: a prompt without an answer")
    else:
        yield raw, []


def _pairs(message_id, above, nodes, children, reached):
    raw = nodes[message_id]
    reached.add(message_id)
    path = above + [raw]
    replies = _ranked_replies(message_id, nodes, children)
    ranked = [r for r in replies if r.record.get("rank") is not None]
    items = []
    if raw.record["role"] == "prompter" and len(ranked) >= 2 and ranked[0].record["rank"] == 0:
        prompt = [_turn(r) for r in path]
        best = ranked[0]
        for worse in ranked[1:]:
            if worse.record["rank"] > best.record["rank"]:
                items.append(pair(prompt, best.record["text"], worse.record["text"],
                                  {**_meta(raw), "chosen_rank": best.record["rank"],
                                   "rejected_rank": worse.record["rank"]}))
    yield raw, items
    for reply in replies:
        yield from _pairs(reply.record["message_id"], path, nodes, children, reached)
