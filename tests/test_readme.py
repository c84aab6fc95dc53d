"""The README's commands exist: the two set-up lines, the test command CI runs, and every flag it names."""

import re
import subprocess
import sys

from conftest import ROOT

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
    build_section = README.split("## Build", 1)[1].split("## Refresh and publish", 1)[0]
    flags = set(re.findall(r"(?<![-\w])(--[a-z][a-z-]*)", build_section))
    assert {"--set", "--limit", "--fresh", "--run-dir", "--debug"} <= flags
    for flag in flags:
        assert flag in help_text, flag
    train_section = README.split("## Train", 1)[1].split("##", 1)[0]
    train_help = "".join(subprocess.run([sys.executable, "-m", "pipelines.train", command, "--help"],
                                        capture_output=True, text=True, cwd=ROOT).stdout
                         for command in ("sft", "dpo", "export", "merge")) + help_text  # and a build on a trained model
    for flag in set(re.findall(r"(?<![-\w])(--[a-z][a-z-]*)", train_section)):
        assert flag in train_help, flag
