"""IFEval's constraint types drawn onto an instruction: the project's `ifeval_dev` set and the `verified_if` recipe
both phrase constraints this way. `constrain(base, rng)` picks one to three of 22 of IFEval's 25 instruction types
(not the two-responses, repeat-the-prompt and constrained-response ones, which make a generic prompt odd), never two
that IFEval lists as conflicting, draws their arguments, and appends each checker's own description of itself, built
from the same kwargs the checker later verifies."""

from __future__ import annotations

import random
import re

from pipelines.prompts import following

_WORDS = ["however", "first", "today", "finally", "overall", "imagine", "remember", "importantly"]
_FORBIDDEN = ["very", "really", "thing", "good", "just", "actually", "basically", "simply"]
_ENDINGS = ["Is there anything else I can help with?", "Let me know if you have additional questions.",
            "That is all for now."]


def _relation(rng: random.Random) -> str:
    return rng.choice(["at least", "less than"])


def _content_words(text: str) -> list[str]:
    return sorted({w.lower() for w in re.findall(r"[A-Za-z]{5,}", text)})


KWARGS = {  # instruction id -> (rng, seed instruction) -> its kwargs
    "keywords:existence": lambda rng, base: {"keywords": rng.sample(_content_words(base) or _WORDS, 1)
                                             + rng.sample(["example", "summary", "detail", "reason"], 1)},
    "keywords:frequency": lambda rng, base: {"keyword": rng.choice(_content_words(base) or _WORDS),
                                             "frequency": rng.randint(2, 4), "relation": "at least"},
    "keywords:forbidden_words": lambda rng, base: {"forbidden_words": rng.sample(_FORBIDDEN, 2)},
    "keywords:letter_frequency": lambda rng, base: {"letter": rng.choice("aeiost"), "let_frequency": rng.randint(5, 15),
                                                    "let_relation": _relation(rng)},
    "language:response_language": lambda rng, base: {"language": rng.choice(["fr", "es", "de"])},
    "length_constraints:number_sentences": lambda rng, base: {"num_sentences": rng.randint(3, 10),
                                                              "relation": _relation(rng)},
    "length_constraints:number_paragraphs": lambda rng, base: {"num_paragraphs": rng.randint(2, 4)},
    "length_constraints:number_words": lambda rng, base: {"num_words": rng.choice([50, 80, 120, 200, 300]),
                                                          "relation": _relation(rng)},
    "length_constraints:nth_paragraph_first_word": lambda rng, base: _nth_paragraph(rng),
    "detectable_content:number_placeholders": lambda rng, base: {"num_placeholders": rng.randint(1, 3)},
    "detectable_content:postscript": lambda rng, base: {"postscript_marker": rng.choice(["P.S.", "P.P.S"])},
    "detectable_format:number_bullet_lists": lambda rng, base: {"num_bullets": rng.randint(2, 5)},
    "detectable_format:number_highlighted_sections": lambda rng, base: {"num_highlights": rng.randint(1, 3)},
    "detectable_format:multiple_sections": lambda rng, base: {"section_spliter": rng.choice(["Section", "SECTION"]),
                                                              "num_sections": rng.randint(2, 4)},
    "detectable_format:json_format": lambda rng, base: {},
    "detectable_format:title": lambda rng, base: {},
    "startend:end_checker": lambda rng, base: {"end_phrase": rng.choice(_ENDINGS)},
    "startend:quotation": lambda rng, base: {},
    "change_case:capital_word_frequency": lambda rng, base: {"capital_frequency": rng.randint(2, 8),
                                                             "capital_relation": _relation(rng)},
    "change_case:english_capital": lambda rng, base: {},
    "change_case:english_lowercase": lambda rng, base: {},
    "punctuation:no_comma": lambda rng, base: {},
}


def _nth_paragraph(rng: random.Random) -> dict:
    paragraphs = rng.randint(2, 4)
    return {"num_paragraphs": paragraphs, "nth_paragraph": rng.randint(1, paragraphs), "first_word": rng.choice(_WORDS)}


def constrain(base: str, rng: random.Random, counts=(1, 2, 3), weights=(4, 4, 2)) -> dict:
    """{prompt, instruction_id_list, kwargs} for `base` with constraints drawn by `rng` (IFEval's item format)."""
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_CONFLICTS

    checkers = following.registry("ifeval")
    chosen: list[str] = []
    for _ in range(rng.choices(counts, weights=weights)[0]):
        allowed = [i for i in KWARGS if i not in chosen
                   and not any(i in INSTRUCTION_CONFLICTS[c] or c in INSTRUCTION_CONFLICTS[i] for c in chosen)]
        chosen.append(rng.choice(allowed))
    kwargs = [KWARGS[i](rng, base) for i in chosen]
    words = [checkers[i](i).build_description(**k) for i, k in zip(chosen, kwargs)]
    return {"prompt": " ".join([base, *words]), "instruction_id_list": chosen, "kwargs": kwargs}
