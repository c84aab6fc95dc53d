"""NVIDIA HelpSteer / HelpSteer2: one row per response, `{"prompt", "response", "helpfulness", "correctness",
"coherence", "complexity", "verbosity"}` (each 0-4).

As conversations: one per row, the attributes in `meta`. HelpSteer2 prompts that hold earlier turns, separated by
`<extra_id_1>User` / `<extra_id_1>Assistant` lines, become those turns. As preference pairs: the responses to one
prompt are ranked by helpfulness, then correctness, then coherence; the best is chosen, the worst rejected, and a
prompt whose responses rank equal is a tie.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Iterator

from connectors.base import RecordError, completion, convert_each, extras, pair, text_field
from connectors.streams import Raw

NAME = "helpsteer"
KINDS = ("conversation", "preference")
ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
RANK_BY = ("helpfulness", "correctness", "coherence")
TURN = re.compile(r"\n?<extra_id_1>(User|Assistant)\n")


def matches(record: dict) -> bool:
    return "prompt" in record and "response" in record and "helpfulness" in record


def prompt_turns(prompt: str) -> list[dict]:
    parts = TURN.split(prompt)
    turns = [{"role": "user", "content": parts[0].strip()}]
    for speaker, text in zip(parts[1::2], parts[2::2]):
        turns.append({"role": "user" if speaker == "User" else "assistant", "content": text.strip()})
    return turns


def scores(record: dict) -> dict:
    out = {}
    for name in ATTRIBUTES:
        try:
            out[name] = float(record[name])
        except (KeyError, TypeError, ValueError):
            raise RecordError(f"bad_field: '{name}' is {record.get(name)!r}, not a 0-4 score") from None
    return out


def convert(record: dict) -> list[dict]:
    messages = prompt_turns(text_field(record, "prompt"))
    messages.append({"role": "assistant", "content": text_field(record, "response")})
    meta = {**extras(record, ("prompt", "response", *ATTRIBUTES)), **scores(record)}
    return [{"messages": messages, "meta": meta}]


def convert_all(raws: Iterator[Raw], kind: str) -> Iterator[tuple[Raw, list | RecordError]]:
    if kind == "conversation":
        yield from convert_each(convert, raws)
        return
    groups: dict[str, list[Raw]] = defaultdict(list)
    for raw, items in convert_each(convert, raws):
        if isinstance(items, RecordError):
            yield raw, items
        else:
            groups[raw.record["prompt"]].append(raw)
    for prompt, rows in groups.items():
        yield from _pair_group(prompt, rows)


def _pair_group(prompt: str, rows: list[Raw]) -> Iterator[tuple[Raw, list | RecordError]]:
    rank = {id(raw): tuple(scores(raw.record)[k] for k in RANK_BY) for raw in rows}
    ranked = sorted(rows, key=lambda raw: rank[id(raw)], reverse=True)
    best, worst = ranked[0], ranked[-1]
    if len(ranked) < 2:
        yield best, RecordError("too_few: only one response to this prompt, a pair needs 2")
    elif rank[id(best)] == rank[id(worst)]:
        for raw in ranked:
            yield raw, RecordError(f"tie: all {len(ranked)} responses to this prompt rank equal")
    else:
        for raw in ranked[1:]:
            yield raw, []  # used: its response is the rejected one or listed in the completions
        done = [completion(raw.record["response"], overall=scores(raw.record)["helpfulness"],
                           ratings=[{"aspect": k, "rating": v, "rationale": None}
                                    for k, v in scores(raw.record).items()])
                for raw in ranked]
        meta = extras(best.record, ("prompt", "response", *ATTRIBUTES))
        yield best, [pair(prompt_turns(prompt), best.record["response"], worst.record["response"], meta,
                          score_chosen=done[0]["overall"], score_rejected=done[-1]["overall"], completions=done)]
