"""Prompt builders, parsers and filters for Self-Instruct (Wang et al., 2022, arXiv:2212.10560) and Alpaca.

Builders return chat messages; parsers turn the teacher's text into clean values; filters return a drop reason or
None. Separate so each can be tested, and so a parser change reuses answers already in the cache.

Generation follows Self-Instruct's `bootstrap_instructions.py`: a numbered list of 8 tasks from the pool (6 seed +
2 machine-generated), and the model continues the list. The filters are theirs: more than 3 and at most 150 words,
their keyword blacklist (things a text model cannot see or make), no "Write a program", no leading punctuation or
non-ASCII character, ROUGE-L F-measure at most 0.7 against everything in the pool (in `self_instruct.py`).
Added here: no chatter ("Sure", "Here are", "The answer is") and mostly English letters.

Tuned on SmolLM2-135M, which (measured) continues the list as "Task 9: ..." lines most of the time, but also
restarts at "Task 1:", leaves items empty, writes `**Task 9:**` or `9.`, copies the examples verbatim, and adds
chatter after the list ("You can choose any of the mentioned tasks."). Hence: only labelled lines are items, the
label may take any of those shapes, an empty label takes the next line, and copies are left to the ROUGE-L filter.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

from pipelines.core.errors import SourceError
from pipelines.dedup.rouge import tokenize
from pipelines.prompts import fill, load

BLACKLIST = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps", "draw",
             "plot", "go to", "video", "audio", "music", "flowchart", "diagram")
BLACKLIST_RE = re.compile(r"\b(" + "|".join(re.escape(w) for w in BLACKLIST) + r")\b", re.I)
PROMPT_FILE = "prompts/self_instruct.yaml"
TEXT = load("self_instruct")
NO_INPUT = re.compile(r"^\W*(<?\s*no\s*_?input\s*>?|none|n/?a|no input (is )?(needed|required)|nothing)\W*$", re.I)
# "Task 9: ...", "**Task 9:** ...", "9. ...", "9) ...", "- Task 9 - ...", "### Instruction 9", "Task: ..."
LABEL = re.compile(r"""^\s*(?:[-*#>]+\s*)?(?:\*\*)?\s*         # bullet, heading or bold
    (?: (?:task|instruction)\s*\#?\s*(\d{1,3})                    # Task 9, Instruction #9
      | (\d{1,3})(?=[.):](?:\s|$))                             # 9. / 9) / 9:  (not 3.5)
      | (?:task|instruction)(?=\s*:) )                          # Task:
    \s*(?:\*\*)?\s*[:.)\-\u2013]?\s*(?:\*\*)?\s*(.*)$""", re.I | re.X)
QUOTES = "\"'\u201c\u201d"
CHATTER = re.compile(r"^(sure|okay|here (is|are)|(the )?answer( is)?|output|note|thanks?|thank you|i hope|"
                     r"i'm sorry|i am sorry|as an ai)\b", re.I)
STOP_AT = re.compile(r"\s*\b(input|output|example|answer|response|solution)\s*:", re.I)
SEED_FIELDS = ("id", "name", "instruction", "instances", "is_classification")


def load_seed_tasks(path: str | Path) -> list[dict]:
    """Seed tasks in the Self-Instruct format, one JSON object per line: id, name, instruction, instances
    [{input, output}], is_classification. A line that is not such a task is an error naming the line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SourceError(f"cannot read seed tasks {path}: {exc.strerror}; pass --set seeds=PATH to a JSONL file "
                          "in the Self-Instruct seed-task format") from None
    tasks = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            task = json.loads(line)
        except ValueError as exc:
            raise SourceError(f"seed tasks {where}: not JSON ({exc})") from None
        missing = [f for f in SEED_FIELDS if not isinstance(task, dict) or f not in task]
        if missing:
            raise SourceError(f"seed tasks {where}: missing {', '.join(missing)} (a seed task has "
                              f"{', '.join(SEED_FIELDS)})")
        if not isinstance(task["instruction"], str) or not task["instruction"].strip():
            raise SourceError(f"seed tasks {where}: 'instruction' must be a non-empty string")
        instances = task["instances"]
        if not isinstance(instances, list) or not all(isinstance(i, dict) and isinstance(i.get("input"), str)
                                                      and isinstance(i.get("output"), str) for i in instances):
            raise SourceError(f"seed tasks {where}: 'instances' must be a list of {{input, output}} strings")
        tasks.append({**task, "id": str(task["id"])})
    if not tasks:
        raise SourceError(f"seed tasks {path}: no tasks in the file")
    ids = [t["id"] for t in tasks]
    if len(set(ids)) != len(ids):
        raise SourceError(f"seed tasks {path}: ids are not unique")
    return tasks


def one_line(text: str) -> str:
    """Whitespace collapsed, a trailing colon removed (as Self-Instruct's encode_prompt does)."""
    return re.sub(r"\s+", " ", text).strip().rstrip(":")


def build_generation(examples: list[str], n_new: int) -> list[dict]:
    """Messages showing `examples` as Task 1..k and asking for Task k+1..k+n_new."""
    listing = "\n".join(fill(TEXT["generate_task"], i=i, task=one_line(text)) for i, text in enumerate(examples, 1))
    ask = fill(TEXT["generate_ask"], first=len(examples) + 1, last=len(examples) + n_new)
    return [{"role": "system", "content": TEXT["generate_system"]},
            {"role": "user", "content": fill(TEXT["generate_request"], listing=listing, ask=ask)}]


def parse_tasks(text: str | None) -> list[str]:
    """The tasks of a numbered list, in order; empty items are skipped.

    'Sure!\\nTask 9: Name a fruit.\\n**Task 10:** List two colours.\\nInput: none\\nThanks' ->
    ['Name a fruit.', 'List two colours.']
    """
    lines = (text or "").splitlines()
    items = []
    for i, line in enumerate(lines):
        match = LABEL.match(line)
        if not match:
            continue
        body = match.group(3).strip()
        if not body:  # "### Task 9" with the task on the very next line, unless that line is a label itself
            following = lines[i + 1] if i + 1 < len(lines) else ""
            body = "" if LABEL.match(following) else following.strip()
        body = STOP_AT.split(body, maxsplit=1)[0] if STOP_AT.match(body) is None else ""
        body = one_line(unquote(body.replace("**", "").strip()))
        if body:
            items.append(body)
    return items


def unquote(text: str) -> str:
    """`'"Describe a sunset."'` -> `'Describe a sunset.'`; a quote inside the text stays."""
    if len(text) >= 2 and text[0] in QUOTES and text[-1] in QUOTES:
        return text[1:-1].strip()
    return text


def check_instruction(text: str, min_words: int, max_words: int) -> str | None:
    """Self-Instruct's filters, cheapest first: `"length: 3 words"`, `"blacklist: image"`, `"junk: ..."`."""
    words = len(text.split())
    if words < min_words or words > max_words:
        return f"length: {words} words"
    if hit := BLACKLIST_RE.search(text):
        return f"blacklist: {hit.group(1).lower()}"
    if text.lower().startswith("write a program"):
        return "blacklist: write a program"
    if text[0] in string.punctuation:
        return f"junk: starts with punctuation {text[0]!r}"
    if not text[0].isascii():
        return "junk: starts with a non-ASCII character"
    if CHATTER.match(text):
        return "junk: chatter or an answer, not a task"
    visible = [c for c in text if not c.isspace()]
    letters = sum(c.isascii() and c.isalpha() for c in visible)
    if letters < 0.6 * len(visible):
        return f"junk: {letters} of {len(visible)} characters are English letters"
    return None


def input_shots(tasks: list[dict], k: int = 4) -> tuple[tuple[str, str], ...]:
    """(instruction, input) pairs to show when asking for an input: the shortest seed tasks, half with an input and
    half without ('' stands for no input), alternating, so the model sees both answers."""
    short = sorted((t for t in tasks if t["instances"]), key=lambda t: len(t["instruction"]) + len(
        t["instances"][0]["input"]))
    with_input = [(t["instruction"], t["instances"][0]["input"]) for t in short if t["instances"][0]["input"].strip()]
    without = [(t["instruction"], "") for t in short if not t["instances"][0]["input"].strip()]
    shots = [shot for pair in zip(with_input, without) for shot in pair] or with_input + without
    return tuple(shots[:k])


def build_input(instruction: str, shots: tuple[tuple[str, str], ...]) -> list[dict]:
    """Few-shot messages asking for the input of `instruction` (or <noinput>)."""
    messages = [{"role": "system", "content": TEXT["input_system"]}]
    for task, given in shots:
        messages += [{"role": "user", "content": fill(TEXT["input_task"], task=one_line(task))},
                     {"role": "assistant", "content": given or TEXT["no_input"]}]
    return messages + [{"role": "user", "content": fill(TEXT["input_task"], task=one_line(instruction))}]


def parse_input(text: str | None, instruction: str) -> tuple[str, str | None]:
    """(input, why it was emptied or None): the first paragraph, labels removed; '<noinput>', 'None' and the like,
    or a copy of the instruction, become ''.

    'Input: Paris, Rome\\n\\nOutput: ...' -> ('Paris, Rome', None); '<noinput>' -> ('', None)
    """
    paragraph = re.split(r"\n\s*\n", (text or "").strip(), maxsplit=1)[0].strip()
    paragraph = re.sub(r"^(\*\*)?(input|task input|example input)\s*:\s*(\*\*)?\s*", "", paragraph, flags=re.I)
    paragraph = STOP_AT.split(paragraph, maxsplit=1)[0].strip() if not STOP_AT.match(paragraph) else ""
    if not paragraph or NO_INPUT.match(paragraph) or "noinput" in paragraph.lower().replace(" ", ""):
        return "", None
    if re.match(r"^\W*(task|instruction)\s*\d*\s*:", paragraph, re.I):
        return "", "input_was_a_task"
    if tokenize(paragraph) == tokenize(instruction):
        return "", "input_copied_instruction"
    return paragraph, None


def user_turn(instruction: str, given: str) -> str:
    """The Alpaca prompt as one user turn: the instruction, then a blank line and the input when there is one."""
    return f"{instruction}\n\n{given}" if given else instruction
