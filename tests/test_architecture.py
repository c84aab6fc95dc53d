"""docs/architecture.md's worked example, built exactly as written, and the recipe contract's checks."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

import datasets
import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import ROOT, run_build  # noqa: E402
from pipelines.core.errors import ConfigError  # noqa: E402
from pipelines.core.recipe import Recipe, Refresh  # noqa: E402
from pipelines.recipes import load_recipe, names  # noqa: E402

DOC = ROOT / "docs" / "architecture.md"
FILE_BLOCK = re.compile(r"<!-- file: (\S+) -->\n```\w*\n(.*?)\n```", re.S)


def example_files() -> dict[str, str]:
    return {name: body + "\n" for name, body in FILE_BLOCK.findall(DOC.read_text())}


def test_the_worked_example_builds_as_written(tmp_path, teacher_server):
    files = example_files()
    assert sorted(files) == ["summaries.md", "summaries.py", "summaries.yaml"]
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    for name, text in files.items():
        (recipes / name).write_text(text)
    texts = tmp_path / "texts.jsonl"
    facts = ["The Moon's gravity pulls on the oceans and causes tides twice a day along most coasts.",
             "Honey bees dance to tell other bees in the hive where to find flowers with nectar.",
             "Glaciers carve valleys as they move slowly downhill, grinding rock under their weight.",
             "Copper is a good conductor of electricity, which is why most household wires are made of it.",
             "Volcanoes form where molten rock rises through cracks in the crust and erupts as lava."]
    texts.write_text("".join(json.dumps({"text": f}) + "\n" for f in facts) + "not json\n")
    run_dir = tmp_path / "run"
    run_build(run_dir, f"sources={texts}", server=teacher_server, recipe="summaries",
                     env={"PIPELINES_RECIPE_PATH": str(recipes)})
    rows = datasets.load_dataset(str(run_dir / "export"), cache_dir=str(tmp_path / "hf"))  # see conftest: own cache
    got = [row for split in rows.values() for row in split]
    assert got and all(r["messages"][0]["content"].startswith("Summarize this text in two sentences.") for r in got)
    assert all(r["messages"][1]["role"] == "assistant" and r["messages"][1]["content"] for r in got)
    card = (run_dir / "export" / "README.md").read_text()
    assert "Two-sentence summaries of" in card and "summaries.yaml" in card  # the prompt file is hashed in the card
    quarantined = pl.read_parquet(run_dir / "quarantine.parquet")
    assert any(str(loc).endswith("texts.jsonl:6") for loc in quarantined["locator"])  # the bad line, kept with why


def test_a_recipe_outside_the_tree_cannot_shadow_a_built_in(tmp_path, monkeypatch):
    (tmp_path / "orca.py").write_text("raise SystemExit('never imported')\n")
    monkeypatch.setenv("PIPELINES_RECIPE_PATH", str(tmp_path))
    assert load_recipe("orca").name == "orca"


def test_every_recipe_keeps_the_contract():
    for name in names():
        recipe = load_recipe(name)
        assert recipe.name == name and recipe.summary
        fields = {f.name for f in dataclasses.fields(recipe.config)}
        assert set(recipe.roles) <= fields and (recipe.refresh is None or {"sources", "index"} <= fields)


def test_teacher_stages_name_their_prompts_as_data_files():
    from pipelines.release.lineage import PACKAGE

    for name in ("ultrachat", "orca", "self_instruct", "ultrafeedback", "evol_instruct", "reasoning"):
        recipe = load_recipe(name)
        teachers = [s for s in recipe.stages(recipe.config()) if getattr(s, "uses_teacher", False)]
        assert teachers, name
        for stage in teachers:
            assert stage.prompt_files, stage.name
            for file in stage.prompt_files:
                assert file.endswith((".yaml", ".json")) and (PACKAGE / file).is_file(), (stage.name, file)


def test_an_edited_prompt_file_makes_its_stage_run_again(tmp_path):
    from pipelines.core.runner import fingerprint
    from pipelines.core.stage import Context
    from pipelines.stages.evol_instruct import Evolve

    prompts = tmp_path / "evolve.yaml"
    prompts.write_text("system: You rewrite instructions.\n")
    stage = Evolve()
    stage.prompt_files = (str(prompts),)  # a recipe outside the tree names its files by absolute path
    ctx = Context(run_dir=tmp_path, config=None)
    before = fingerprint(stage, ctx, "")
    assert fingerprint(stage, ctx, "") == before
    prompts.write_text("system: You rewrite instructions, briefly.\n")
    assert fingerprint(stage, ctx, "") != before


def test_a_recipe_that_breaks_the_contract_is_refused_when_made():
    @dataclasses.dataclass(frozen=True)
    class Plain:
        name: str = "x"

    with pytest.raises(ConfigError, match="roles"):
        Recipe(name="x", summary="x", config=Plain, stages=lambda cfg: [], card="ingest", roles=("teacher",))
    with pytest.raises(ConfigError, match="sources"):
        Recipe(name="x", summary="x", config=Plain, stages=lambda cfg: [], card="ingest", refresh=Refresh())


def test_help_lists_the_recipes_the_command_takes():
    from pipelines.build import make_parser as build_parser
    from pipelines.refresh import make_parser as refresh_parser

    built, refreshed = build_parser().format_help(), refresh_parser().format_help()
    for name in names():
        recipe = load_recipe(name)
        assert recipe.summary in built
        assert (recipe.summary in refreshed) == (recipe.refresh is not None), name
