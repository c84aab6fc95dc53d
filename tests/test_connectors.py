from pathlib import Path

import pytest

from connectors.text import read_passages
from pipelines.core.errors import SourceError

DATA = Path(__file__).parent / "data"


def test_jsonl_passages_and_unusable_lines_are_reported():
    problems = []
    passages = read_passages(DATA / "materials.jsonl", problems=problems)
    assert [p["title"] for p in passages] == ["materials.jsonl:1", "materials.jsonl:4"]
    assert passages[0]["text"].startswith("Tides rise")
    assert problems == ["materials.jsonl:2: no string 'text' field", "materials.jsonl:3: not JSON (Expecting value)"]


def test_markdown_is_cut_into_passages_within_limits():
    passages = read_passages(DATA / "notes.md", min_chars=100, max_chars=300)
    assert len(passages) >= 2 and all(len(p["text"]) <= 300 for p in passages)
    assert "Fresnel" in passages[0]["text"]


def test_missing_file_is_a_source_error_naming_it(tmp_path):
    with pytest.raises(SourceError, match="nope.txt"):
        read_passages(tmp_path / "nope.txt")
