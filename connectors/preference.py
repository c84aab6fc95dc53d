"""TRL preference: explicit `{"prompt", "chosen", "rejected"}` (strings or message lists), implicit-prompt
`{"chosen", "rejected"}` (two message lists whose shared beginning is the prompt), and the
`HuggingFaceH4/ultrafeedback_binarized` shape (a `prompt` string beside whole `chosen`/`rejected` conversations)."""

from __future__ import annotations

from connectors.base import RecordError, extras, pair
from connectors.prompt_completion import as_turns

NAME = "preference"
KINDS = ("preference",)


def matches(record: dict) -> bool:
    return "chosen" in record and "rejected" in record and (
        "prompt" in record or isinstance(record["chosen"], list))


def split_pair(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], str, str]:
    """Two whole conversations -> (shared prompt turns, chosen answer, rejected answer).

    Each side must add exactly one assistant turn to the shared turns.
    """
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == len(chosen) == len(rejected):
        raise RecordError("identical: chosen and rejected are the same conversation")
    tails = chosen[shared:], rejected[shared:]
    if any(len(t) != 1 or t[0]["role"] != "assistant" for t in tails):
        raise RecordError(f"prompt_mismatch: chosen and rejected differ before their last assistant turn "
                          f"(shared {shared} turns, then {len(tails[0])} and {len(tails[1])} more)")
    return chosen[:shared], tails[0][0]["content"], tails[1][0]["content"]


def _whole_conversations(record: dict) -> bool:
    """ultrafeedback_binarized shape: a `prompt` string, and `chosen`/`rejected` that already start with it."""
    chosen = record["chosen"]
    return (isinstance(chosen, list) and bool(chosen) and isinstance(chosen[0], dict)
            and chosen[0].get("role") in ("user", "system"))


def convert(record: dict) -> list[dict]:
    meta = extras(record, ("prompt", "chosen", "rejected", "score_chosen", "score_rejected"))
    if "prompt" in record and not _whole_conversations(record):
        prompt = as_turns(record["prompt"], "user", meta, "prompt")
        chosen = prompt + as_turns(record["chosen"], "assistant", meta, "chosen")
        rejected = prompt + as_turns(record["rejected"], "assistant", meta, "rejected")
    else:
        chosen = as_turns(record["chosen"], "assistant", meta, "chosen")
        rejected = as_turns(record["rejected"], "assistant", meta, "rejected")
    prompt, chosen_text, rejected_text = split_pair(chosen, rejected)
    return [pair(prompt, chosen_text, rejected_text, meta,
                 score_chosen=record.get("score_chosen"), score_rejected=record.get("score_rejected"))]
