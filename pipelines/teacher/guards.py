"""Guards every teacher stage shares: refusals, loops, echoes, cut answers, and stable hashes of ids.

Each returns a fact about a text; the stage turns it into a drop reason in its own words. Tuned on SmolLM2-135M's
failures (it loops, repeats its instructions, says it is an AI); a stronger teacher passes them unchanged.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections import Counter

AI_TALK = re.compile(r"\b(as an ai|i'm an ai|i am an ai|as a language model|i cannot assist|i can't assist|"
                     r"i'm sorry, but i can(not|'t))\b", re.I)  # a turn that refuses or talks about being an AI
REFUSAL = re.compile(r"\b(i('m| am) sorry,? but i (can(no|')t|am unable|won't)|i can(no|')t (help|assist|answer|"
                     r"provide|complete) (with )?(this|that|the)|i('m| am) (unable|not able) to (help|assist|answer)|"
                     r"as an ai( language model)?, i (can(no|')t|do not|don't|am unable))", re.I)  # declines a task
WORD = re.compile(r"[a-z0-9]+")
STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just let me more most my myself no nor not now of off
on once only or other ought our ours ourselves out over own same shall she should so some such than that the
their theirs them themselves then there these they this those through to too under until up upon us very was we
were what when where which while who whom why will with would yet you your yours yourself yourselves
s t d ll m re ve don isn aren wasn weren hasn haven hadn doesn didn won wouldn shouldn couldn mustn can't
""".split())  # English function words: a text of nothing else says nothing


def unit_hash(text: str, digits: int = 12) -> float:
    """A stable number in [0, 1) from text (split assignment, sampling by hash): `digits` hex digits of sha256."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:digits], 16) / 16**digits


def is_looping(text: str, repeats: int = 3) -> bool:
    """True if one sentence or line (3+ words) occurs `repeats` times: the small model's degenerate loops."""
    segments = [s.strip(" ,;-*").lower() for s in re.split(r"[\n.!?]+", text)]
    counts = Counter(s for s in segments if len(s.split()) >= 3)
    return bool(counts) and max(counts.values()) >= repeats


def repeats_words(words: list[str], n: int = 6, times: int = 3) -> bool:
    """True if a run of `n` words comes back `times` times, as in loops inside one sentence:
    'is to give a gift to a stranger is to give a gift to a stranger is to give a gift to a stranger' -> True."""
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return bool(grams) and max(grams.values()) >= times


def echoes(turn: str, earlier: str) -> bool:
    """True if `turn` is mostly a copy of `earlier`: similar overall, or 70% of it one stretch of `earlier`."""
    a, b = turn.lower(), earlier.lower()
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    if matcher.ratio() > 0.8:
        return True
    return matcher.find_longest_match(0, len(a), 0, len(b)).size >= 0.7 * len(a)


def echoes_prompt(answer: str, prompt: str) -> bool:
    """True if an answer is mostly its prompt again: similar overall, or 60% of it one stretch of the prompt that
    is half the prompt or around fewer than 2 words of its own. An answer that quotes the span asked for ("The
    meeting is on 14 March, in room 2B of the public library.") or restates the question ("Tom's birthday is in
    the month of April.") is not an echo."""
    a, p = answer.lower()[:3000], prompt.lower()[:3000]
    matcher = difflib.SequenceMatcher(None, a, p, autojunk=False)
    if matcher.ratio() > 0.8:
        return True
    stretch = matcher.find_longest_match(0, len(a), 0, len(p)).size
    if stretch < 0.6 * len(a):
        return False
    own_words = set(WORD.findall(a)) - set(WORD.findall(p))
    return stretch >= 0.5 * len(p) or len(own_words) < 2


def trim_cut_answer(text: str, finish_reason: str | None) -> str:
    """Strip the answer; if it was cut by max_tokens, trim it back to its last full sentence."""
    text = text.strip()
    if finish_reason == "length":
        cut = max(text.rfind(". "), text.rfind(".\n"), text.rfind("!"), text.rfind("?"))
        if text.endswith((".", "!", "?")):
            cut = len(text) - 1
        if cut > len(text) // 3:
            text = text[: cut + 1]
    return text
