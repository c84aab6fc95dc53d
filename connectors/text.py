"""Plain text (.txt, .md, JSONL with a `text` field): a format for ingest, and passages for distillation recipes.

A passage is a run of paragraphs (split at blank lines) of at most `max_chars`; shorter runs than `min_chars`
are merged forward, and longer single paragraphs are kept whole up to `max_chars` characters.
"""

from __future__ import annotations

import json
from pathlib import Path

from connectors.base import extras, text_field
from connectors.errors import SourceError

NAME = "text"
KINDS = ("text",)


def matches(record: dict) -> bool:
    """A record whose only text is `text` (TRL's language-modeling shape, or a .txt/.md file)."""
    return isinstance(record.get("text"), str)


def convert(record: dict) -> list[dict]:
    return [{"text": text_field(record, "text"), "meta": extras(record, ("text",))}]


def read_passages(path: str | Path, *, min_chars: int = 200, max_chars: int = 1200,
                  problems: list[str] | None = None) -> list[dict]:
    """[{"title": "notes.jsonl:3", "text": "..."}] in file order; raises SourceError if the file cannot be read.

    JSONL lines that do not parse or have no string `text` are appended to `problems` as "file:line: reason".
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"source file not found: {path}; check the path given in --set sources=...")
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read {path}: {exc}; give a UTF-8 .txt, .md or .jsonl file") from None
    if path.suffix == ".jsonl":
        texts = []
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                record = None
                reason = f"not JSON ({exc.msg})"
            else:
                reason = "no string 'text' field"
            if isinstance(record, dict) and isinstance(record.get("text"), str):
                texts.append((f"{path.name}:{number}", record["text"]))
            elif problems is not None:
                problems.append(f"{path.name}:{number}: {reason}")
    else:
        texts = [(path.name, raw)]
    passages = []
    for title, text in texts:
        current = ""
        for para in (p.strip() for p in text.split("\n\n")):
            if not para:
                continue
            if current and len(current) + len(para) + 2 > max_chars and len(current) >= min_chars:
                passages.append({"title": title, "text": current})
                current = ""
            current = f"{current}\n\n{para}".strip()[:max_chars]
        if len(current) >= min_chars or (current and not passages):
            passages.append({"title": title, "text": current})
    return passages
