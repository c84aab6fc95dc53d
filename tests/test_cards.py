"""Cards: licenses found beside the inputs, lineage, and the validation every card passes before it is written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import run_build
from connectors.licenses import combined_license, hub_license, license_of
from pipelines.recipes import load_recipe
from pipelines.release.cards import endpoint, size_category, validate_card
from pipelines.release.lineage import describe, input_files, prompt_hashes
from pipelines.teacher.config import TeacherConfig

CARD = """---
license: {license}
language:
- en
task_categories:
- {task}
size_categories:
- {size}
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
---

# test
"""


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train-00000-of-00001.parquet").write_bytes(b"PAR1")
    return tmp_path


def card(license="mit", task="text-generation", size="n<1K") -> str:
    return CARD.format(license=license, task=task, size=size)


def test_a_valid_card_passes(folder):
    assert validate_card(card(), folder) == []


@pytest.mark.parametrize("text, problem", [
    (card(license="MIT License"), "license 'MIT License' is not a Hub license id"),
    (card(task="chat"), "task_categories 'chat' is not one the Hub knows"),
    (card(size="n>1M"), "size_categories 'n>1M' is not one the Hub knows"),
    (card().replace("data/train-*", "data/test-*"), "config default split train: no file matches ['data/test-*']"),
    (card().replace("license: mit", "license: [mit"), "YAML header"),
    (card().replace("- en", "- english"), "language 'english' is not one the Hub knows"),
])
def test_invalid_cards_are_named(folder, text, problem):
    problems = validate_card(text, folder)
    assert any(problem in p for p in problems), problems


def test_size_categories_are_hub_ids():
    assert [size_category(n) for n in (0, 999, 1000, 99_999, 5_000_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "1M<n<10M"]


def test_license_found_beside_a_file(tmp_path):
    hub = tmp_path / "hub" / "data"
    hub.mkdir(parents=True)
    (hub.parent / "README.md").write_text("---\nlicense: cc-by-sa-4.0\n---\n# a downloaded Hub dataset\n")
    (hub / "train.jsonl").write_text("{}\n")
    table = tmp_path / "table"
    table.mkdir()
    (table / "README.md").write_text("| file | rows | license |\n|---|---|---|\n| x/alpaca.json | 3 | Apache-2.0 |\n")
    (table / "alpaca.json").write_text("[]")
    (table / "other.json").write_text("[]")
    licensed = tmp_path / "licensed"
    licensed.mkdir()
    (licensed / "LICENSE").write_text("MIT License\n\nCopyright (c) 2024\n\nPermission is hereby granted, ...")
    (licensed / "chat.jsonl").write_text("{}\n")
    assert license_of(hub / "train.jsonl") == "cc-by-sa-4.0"
    assert license_of(table / "alpaca.json") == "apache-2.0"
    assert license_of(table / "other.json") is None
    assert license_of(licensed / "chat.jsonl") == "mit"
    assert hub_license("Apache-2.0") == "apache-2.0" and hub_license("GPL-ish") is None
    assert combined_license(["mit", "apache-2.0", "mit"]) == ["apache-2.0", "mit"]
    assert combined_license(["mit", None]) == ["mit", "unknown"] and combined_license([]) == ["unknown"]


def test_input_files_hash_and_license_with_the_source_option(tmp_path):
    data = tmp_path / "a.jsonl"
    data.write_text('{"text": "hello"}\n')
    recipe = load_recipe("dedup")
    cfg = recipe.config(sources=(f"{data}?license=odc-by",))
    files = describe(input_files(recipe, cfg), tmp_path / "inputs.json")
    assert [(f.role, Path(f.path).name, f.license) for f in files] == [("source", "a.jsonl", "odc-by")]
    assert files[0].sha256 == hashlib.sha256(data.read_bytes()).hexdigest() and files[0].size == data.stat().st_size
    assert json.loads((tmp_path / "inputs.json").read_text())  # hashes cached by path, size and mtime
    data.write_text('{"text": "changed"}\n')
    assert describe(input_files(recipe, cfg))[0].sha256 != files[0].sha256


def test_prompt_hashes_cover_every_teacher_stage():
    recipe = load_recipe("ultrafeedback")
    rows = prompt_hashes(recipe.stages(recipe.config()))
    assert [(r["stage"], r["role"]) for r in rows] == [("complete", "teacher"), ("judge", "judge")]
    assert all(len(d) == 64 for r in rows for d in r["prompt_files"].values())


def test_endpoint_never_shows_credentials():
    config = TeacherConfig(base_url="https://user:s3cret@api.example.com:8443/v1?key=abc")
    assert endpoint(config) == "https://api.example.com:8443/v1"


def test_ingest_card_has_lineage_and_validates(tmp_path):
    source = Path(__file__).parent / "data" / "formats"
    files = sorted(p for p in source.iterdir() if p.name.startswith("sharegpt"))[:1]
    run_build(tmp_path / "run", f"sources={files[0]}?license=apache-2.0", recipe="ingest")
    export = tmp_path / "run" / "export"
    text = (export / "README.md").read_text()
    assert validate_card(text, export) == []
    assert "license: apache-2.0" in text and files[0].name in text and "## Lineage" in text
    assert "## Version" in text and "pipelines.refresh" in text
