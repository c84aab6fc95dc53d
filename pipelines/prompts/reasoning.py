"""Final answers, read by rules: the reference's (GSM8K `#### 42`, `\\boxed{...}`, a multiple-choice letter) and a
sampled answer's, in the same form, and whether the two agree.

- number: GSM8K's `#### 1,234`, or a reference that is one number. From an answer: the last `#### X`, else "the
  (final) answer is X", else the last `\\boxed{X}`, else the last number in the text. Compared as numbers
  (commas, `$`, `%`, units after the number ignored; `3/4` = 0.75), to 1e-6.
- boxed: a reference with `\\boxed{...}` (MATH). From an answer: its last `\\boxed{...}`. Compared as numbers when
  both are, else as LaTeX with spaces, `\\left`/`\\right`, `\\!` and `dfrac`/`tfrac` normalised.
- choice: a reference that is one letter A-J ("B", "(B)", "Answer: B"). From an answer: "answer is (B)",
  "Answer: B", else the last letter standing alone in parentheses or at the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from pipelines.prompts import fill, load
from pipelines.teacher.wire import Request

NUMBER = re.compile(r"-?\$?\s?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+")
HASHES = re.compile(r"####\s*([^\n]+)")
ANSWER_IS = re.compile(r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*:?\s*\**\s*([^\n]+)", re.I)
CHOICE_REFERENCE = re.compile(r"^\s*(?:answer\s*[:：]?\s*)?\(?([A-J])\)?[.\s]*$", re.I)
CHOICE_SAID = re.compile(r"answer\s*(?:is|:)?\s*:?\s*\**\(?([A-J])\)?(?![a-z])", re.I)
CHOICE_ALONE = re.compile(r"\(([A-J])\)|(?:^|\s)([A-J])[.)]?\s*$", re.M)


@dataclass(frozen=True)
class Reference:
    kind: str  # number, boxed or choice
    value: str  # as written in the reference


def boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (braces balanced), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None


def as_number(text: str) -> Fraction | None:
    """The first number in `text` ('$1,234.50' -> 1234.5, '3/4' -> 0.75), or None."""
    match = NUMBER.search(text.replace("\\!", "").replace("{,}", ","))
    if not match:
        return None
    raw = match.group(0).replace("$", "").replace(",", "").replace(" ", "")
    try:
        return Fraction(raw)
    except (ValueError, ZeroDivisionError):
        return None


def reference_of(text: str) -> Reference | None:
    """What form a reference answer has, or None when it has none these rules read."""
    if (found := HASHES.search(text)) is not None and as_number(found.group(1)) is not None:
        return Reference("number", found.group(1).strip())
    if (inside := boxed(text)) is not None:
        return Reference("boxed", inside)
    if (letter := CHOICE_REFERENCE.match(text)) is not None:
        return Reference("choice", letter.group(1).upper())
    if as_number(text) is not None and len(text.split()) <= 3:
        return Reference("number", text.strip())
    return None


def final_answer(text: str, kind: str) -> str | None:
    """The final answer a sampled answer gives, in the reference's form, or None."""
    if kind == "choice":
        if said := CHOICE_SAID.findall(text):
            return said[-1].upper()
        alone = CHOICE_ALONE.findall(text)
        return next((a or b for a, b in reversed(alone)), None)
    if kind == "boxed":
        return boxed(text)
    for pattern in (HASHES, ANSWER_IS):
        if (found := pattern.findall(text)) and as_number(found[-1]) is not None:
            return found[-1].strip()
    if (inside := boxed(text)) is not None:
        return inside
    numbers = NUMBER.findall(text)
    return numbers[-1].strip() if numbers else None


def latex(text: str) -> str:
    text = re.sub(r"\\left|\\right|\\!|\\,|\\;|\$|\s", "", text)
    return re.sub(r"\\[dt]frac", r"\\frac", text).removesuffix(".").lower()


def agrees(got: str | None, reference: Reference) -> bool:
    if got is None:
        return False
    if reference.kind == "choice":
        return got.upper() == reference.value
    a, b = as_number(got), as_number(reference.value)
    if reference.kind == "number":
        return a is not None and b is not None and abs(float(a - b)) <= 1e-6
    plain = re.compile(r"-?[\d.,]+(/[\d.,]+)?")  # a boxed number: compared as a number
    if plain.fullmatch(latex(got)) and plain.fullmatch(latex(reference.value)) and a is not None and b is not None:
        return abs(float(a - b)) <= 1e-6
    return latex(got) == latex(reference.value)


def solve_request(prompt: str, kind: str, params: dict) -> Request:
    """A problem asked with the system prompt that names the final-answer form of its `kind` (`reasoning.yaml`)."""
    text = load("reasoning")
    return Request([{"role": "system", "content": fill(text["system"], form=text["forms"][kind])},
                    {"role": "user", "content": prompt}], params)
