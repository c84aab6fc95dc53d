"""README.md and docs/ stay true to the tree: every repository path and module they name exists, every relative link
resolves, every code block marked ```bash runnable runs and exits 0, and docs/architecture.md's table of each
recipe's files matches what the recipes import and build. About 15 s, most of it the runnable blocks."""

import ast
import dataclasses
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT

from pipelines.recipes import load_recipe, names

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
TOP = ("pipelines", "tests", "bench", "schemas", "connectors", "data_cards", "docs", r"\.ci")
PATH = re.compile(r"(?<![\w./~$-])((?:%s)/[\w./-]*)" % "|".join(TOP))
MODULE = re.compile(r"(?<![\w./-])((?:pipelines|connectors|schemas)(?:\.[A-Za-z_]\w*)+)")
RUN_MODULE = re.compile(r"python -m ((?:pipelines)(?:\.\w+)*)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^ *```([^\n`]*)\n(.*?)^ *```", re.S | re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")
RUNNABLE = "runnable"  # the info string ```bash runnable marks a block this test runs


def code_text(text: str) -> list[str]:
    """The inline code spans and fenced blocks of a markdown page: where paths and modules are named."""
    blocks = [body for _, body in FENCE.findall(text)]
    prose = FENCE.sub("", text)
    return blocks + CODE_SPAN.findall(prose)


def named_paths() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        text = page.read_text()
        paths = [p for code in code_text(text) for p in PATH.findall(code)]
        # unquoted in prose too (bench/teacher_choice.py), where a file has an extension and a folder its slash
        paths += [p for p in PATH.findall(text) if p.endswith("/") or "." in p.rstrip(".").rsplit("/", 1)[1]]
        found += [(page.relative_to(ROOT).as_posix(), p.rstrip(".")) for p in paths]
    return found


def test_every_path_the_docs_name_exists():
    found = named_paths()
    assert len({p for _, p in found}) >= 120, len(found)  # 130 distinct paths today
    missing = sorted({(page, path) for page, path in found if not (ROOT / path).exists()})
    assert not missing, missing


def is_module(parts: list[str]) -> bool:
    where = ROOT.joinpath(*parts)
    return where.with_suffix(".py").is_file() or (where / "__init__.py").is_file()


def test_every_module_the_docs_name_exists():
    checked, missing = set(), []
    for page in PAGES:
        for code in code_text(page.read_text()):
            for name in RUN_MODULE.findall(code):  # `python -m X` must be runnable: X.py or X/__main__.py
                where = ROOT.joinpath(*name.split("."))
                checked.add(name)
                if not (where.with_suffix(".py").is_file() or (where / "__main__.py").is_file()):
                    missing.append((page.name, name))
            for name in MODULE.findall(code):  # `pipelines.eval.following.run`: a module, then attributes
                parts = name.split(".")
                checked.add(name)
                if not any(is_module(parts[:n]) for n in range(len(parts), 1, -1)):
                    missing.append((page.name, name))
    assert len(checked) >= 20, sorted(checked)  # 24 today
    assert not missing, missing


def test_every_relative_link_resolves():
    links, broken = 0, []
    for page in PAGES:
        for target in LINK.findall(FENCE.sub("", page.read_text())):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            links += 1
            if not (page.parent / target.split("#", 1)[0]).exists():
                broken.append((page.relative_to(ROOT).as_posix(), target))
    assert links >= 40, links
    assert not broken, broken


def runnable_blocks() -> list[tuple[str, str]]:
    blocks = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            words = match.group(1).split()
            if RUNNABLE in words:
                assert words[0] == "bash", (page, match.group(1))
                line = text[:match.start()].count("\n") + 1
                blocks.append((f"{page.relative_to(ROOT).as_posix()}:{line}", match.group(2)))
    return blocks


def test_a_few_quick_commands_are_marked_runnable():
    assert len(runnable_blocks()) >= 4


@pytest.mark.parametrize("where,body", runnable_blocks(), ids=[w for w, _ in runnable_blocks()])
def test_runnable_block_exits_0(where, body, tmp_path):
    """Run as a reader would, from the repository root; `$(mktemp -d)` lands in this test's tmp_path and the model
    cache is empty, so a block that needs a download or a server fails (and is not marked runnable)."""
    env = {**os.environ, "TMPDIR": str(tmp_path), "PIPELINES_CACHE": str(tmp_path / "cache"),
           "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, (where, proc.stdout[-2000:], proc.stderr[-2000:])


def recipe_table() -> dict[str, dict[str, set[str]]]:
    """docs/architecture.md's "Each recipe's files" table: recipe -> column -> the backticked names in the cell."""
    section = (ROOT / "docs" / "architecture.md").read_text().split("## Each recipe's files", 1)[1]
    lines = [line for line in section.split("\n## ", 1)[0].splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [set(CODE_SPAN.findall(c)) for c in line.strip("|").split("|")]
        row = dict(zip(header, cells))
        rows[next(iter(row["recipe"]))] = row
    return rows


def imported(module_file, package: str) -> set[str]:
    """`pipelines.stages.X` / `from pipelines.stages import X` in a module -> {"X.py"}."""
    out = set()
    for node in ast.walk(ast.parse(module_file.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(package + "."):
                out.add(node.module[len(package) + 1:].split(".")[0] + ".py")
            elif node.module == package:
                out.update(a.name + ".py" for a in node.names if is_module([*package.split("."), a.name]))
    return out


def test_the_architecture_table_lists_each_recipes_files():
    table = recipe_table()
    assert set(table) == set(names()) and len(table) >= 10
    for name, row in table.items():
        recipe = load_recipe(name)
        module = ROOT / "pipelines" / "recipes" / f"{name}.py"
        assert row["module"] == {module.relative_to(ROOT).as_posix()}, name
        cfg = recipe.config()
        if "sources" in {f.name for f in dataclasses.fields(cfg)} and not cfg.sources:
            cfg = dataclasses.replace(cfg, sources=("x.jsonl",))  # ingest and dedup need one to make their stages
        stages = recipe.stages(cfg)
        for column, folder in (("stages", "stages"), ("prompts", "prompts"), ("built-in data", "data")):
            for file in row[column] - {"-"}:
                assert (ROOT / "pipelines" / folder / file).is_file(), (name, column, file)
        assert imported(module, "pipelines.stages") <= row["stages"], (name, imported(module, "pipelines.stages"))
        assert {type(s).__module__.rsplit(".", 1)[1] + ".py" for s in stages} <= row["stages"], name
        prompt_code = imported(module, "pipelines.prompts").union(
            *(imported(ROOT / "pipelines" / "stages" / s, "pipelines.prompts") for s in row["stages"]))
        assert prompt_code <= row["prompts"], (name, prompt_code - row["prompts"])
        assert {f.rsplit("/", 1)[1] for s in stages for f in s.prompt_files} <= row["prompts"], name
        assert row["card"] == {f"{recipe.card}.md"} and (ROOT / "data_cards" / f"{recipe.card}.md").is_file(), name
        built_in = {f.rsplit("/", 1)[1] for f in recipe.inputs(recipe.config()).built_in}
        assert built_in == row["built-in data"] - {"-"}, (name, built_in)
        assert row["tests"] and all((ROOT / t).is_file() for t in row["tests"]), name
