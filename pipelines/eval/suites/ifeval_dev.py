"""ifeval_dev: the project's own dev set of IFEval-type constraints, scored by IFEval's checkers (`if-verifiable`'s
copy, by IFEval's rules: `pipelines.eval.following`). The set a recipe may be tuned on; `ifbench` stays out of
distribution.

Made by `make()` (shipped as `pipelines/data/ifeval_dev.jsonl`; `python -m pipelines.eval.suites.ifeval_dev`
rewrites it): each of the project's own seed instructions (the UltraFeedback prompts, the UltraChat writing tasks and
topics, the Self-Instruct seed tasks without input; none from IFEval or IFBench) gets one to three constraints drawn
by a seeded generator from 22 of IFEval's 25 instruction types (not the two-responses, repeat-the-prompt and
constrained-response ones, which make a generic prompt odd), never two that IFEval lists as conflicting. The
constraint's wording is its checker's own description, built from the same kwargs the checker then verifies."""

from __future__ import annotations

import json
import random
import re
from importlib import resources

from pipelines.eval import following
from pipelines.eval.suites import shipped

NAME = "ifeval_dev"
ABOUT = ("the project's IFEval-type dev set (its own seed instructions), prompt-level strict accuracy by IFEval's "
         "checkers")
DEFAULT_LIMIT = 120
PARAMS = {"max_tokens": 768, "temperature": 0.0, "seed": 0}
SEED = 20261207

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


def seed_instructions() -> list[str]:
    data = resources.files("pipelines.data")
    read = lambda name: data.joinpath(name).read_text(encoding="utf-8")  # noqa: E731
    out = [json.loads(line)["text"] for line in read("feedback_prompts.jsonl").splitlines() if line.strip()]
    out += [f"Write {w}." for w in json.loads(read("writing_types.json"))]
    out += [f"Explain {t}." for t in json.loads(read("topics.json"))]
    out += [t["instruction"] for line in read("seed_tasks.jsonl").splitlines() if line.strip()
            for t in [json.loads(line)] if not any(i["input"] for i in t["instances"])]
    return out


def make(seed: int = SEED) -> list[dict]:
    """One item per seed instruction, in a seeded order, in IFEval's input format."""
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_CONFLICTS

    checkers = following.registry("ifeval")
    rng = random.Random(seed)
    bases = seed_instructions()
    rng.shuffle(bases)
    items = []
    for key, base in enumerate(bases):
        chosen: list[str] = []
        for _ in range(rng.choices([1, 2, 3], weights=[4, 4, 2])[0]):
            allowed = [i for i in KWARGS if i not in chosen
                       and not any(i in INSTRUCTION_CONFLICTS[c] or c in INSTRUCTION_CONFLICTS[i] for c in chosen)]
            chosen.append(rng.choice(allowed))
        kwargs = [KWARGS[i](rng, base) for i in chosen]
        words = [checkers[i](i).build_description(**k) for i, k in zip(chosen, kwargs)]
        items.append({"key": key, "prompt": " ".join([base, *words]), "instruction_id_list": chosen,
                      "kwargs": kwargs})
    return items


def items(limit: int | None, options: dict | None = None) -> list[dict]:
    return [{"id": f"ifeval_dev-{r['key']}", **{k: r[k] for k in ("prompt", "instruction_id_list", "kwargs")}}
            for r in shipped(NAME, limit)]


def prompt_of(item: dict) -> str:
    return item["prompt"]


def run(rows: list[dict], ctx) -> list[dict]:
    return following.run(rows, ctx, "ifeval", PARAMS, NAME)


summary = following.summary

if __name__ == "__main__":
    target = resources.files("pipelines.data").joinpath("ifeval_dev.jsonl")
    with open(str(target), "w", encoding="utf-8") as out:
        out.writelines(json.dumps(item, ensure_ascii=False) + "\n" for item in make())
    print(f"wrote {target}")
