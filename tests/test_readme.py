"""The README is a short front door whose commands exist: the two set-up lines, the test command CI runs, every flag
it names (and docs/train.md's), one line per recipe and a link to every page under docs/."""

import re
import subprocess
import sys

from conftest import ROOT

from pipelines.recipes import names

README = (ROOT / "README.md").read_text()


def setup_commands() -> list[str]:
    section = README.split("## Set up", 1)[1].split("##", 1)[0]
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_two_one_line_setup_commands_and_ci_runs_the_test_one():
    commands = setup_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert commands[0].endswith("python -m pipelines.build ultrachat")
    assert all("python -m pipelines.llama install" in c for c in commands)  # the embedded engine for this CPU
    assert "pytest" in commands[1] and "[dev]" in commands[1]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def test_every_build_flag_in_the_readme_is_in_help():
    help_text = subprocess.run([sys.executable, "-m", "pipelines.build", "--help"], capture_output=True,
                               text=True, cwd=ROOT).stdout
    build_section = README.split("\n## Build\n", 1)[1].split("\n## ", 1)[0]
    flags = set(re.findall(r"(?<![-\w])(--[a-z][a-z-]*)", build_section))
    assert {"--set", "--limit", "--fresh", "--run-dir", "--debug", "--show-config", "--dry-run"} <= flags
    for flag in flags:
        assert flag in help_text, flag
    train_section = (ROOT / "docs" / "train.md").read_text()  # training moved out of the README
    train_help = "".join(subprocess.run([sys.executable, "-m", "pipelines.train", command, "--help"],
                                        capture_output=True, text=True, cwd=ROOT).stdout
                         for command in ("sft", "dpo", "export", "merge")) + help_text  # and a build on a trained model
    for flag in set(re.findall(r"(?<![-\w])(--[a-z][a-z-]*)", train_section)):
        assert flag in train_help, flag


def test_the_readme_is_a_front_door_with_one_line_per_recipe_and_a_link_to_every_page():
    lines = README.splitlines()
    assert len(lines) <= 250, len(lines)  # the details live under docs/
    section = README.split("\n## Recipes\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert sorted(re.match(r"\| `(\w+)`", row).group(1) for row in rows) == sorted(names())
    for row in rows:  # each recipe's line links the page that describes it
        page = re.search(r"\]\((docs/[\w/.-]+\.md)\)", row).group(1)
        assert (ROOT / page).is_file() and re.match(r"\| `(\w+)`", row).group(1) in (ROOT / page).read_text(), row
    linked = set(re.findall(r"\]\((docs/[\w/.-]+\.md)\)", README))
    pages = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert len(pages) >= 15 and pages <= linked, sorted(pages - linked)
