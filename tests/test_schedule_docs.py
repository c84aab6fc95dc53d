"""The refresh and publish commands in README.md and docs/schedule/ parse with the real parsers, and the schedule
files are what cron, systemd and GitHub Actions accept (no network, no build: well under a second)."""

import configparser
import re
import shlex

import yaml
from conftest import ROOT

from pipelines import publish, refresh
from pipelines.core.config import apply_overrides
from pipelines.recipes import load_recipe, names

README = (ROOT / "README.md").read_text()
SCHEDULE = ROOT / "docs" / "schedule"
CRONTAB = SCHEDULE / "crontab"
SERVICE = SCHEDULE / "convoforge-refresh.service"
TIMER = SCHEDULE / "convoforge-refresh.timer"
WORKFLOW = SCHEDULE / "github-actions-refresh.yml"
PARSERS = {"refresh": refresh.make_parser, "publish": publish.make_parser}
COMMAND = re.compile(r"python -m pipelines\.(refresh|publish)\b")
REDIRECT = re.compile(r"(?<!\S)\d*(?:>>|>|<)&?\s*\S+")  # `>> log`, `2>&1`
CONTROL = {"&&", "||", ";", "|", "&", "(", ")", "{", "}"}
CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))  # minute, hour, day of month, month, day of week


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def commands(text: str, env: dict[str, str] | None = None) -> list[tuple[str, list[str]]]:
    """Each `python -m pipelines.refresh|publish ...` in `text` as (module, argv), shell around it removed.

    `cd x && .venv/bin/python -m pipelines.refresh dedup >> log 2>&1 && ...` -> ("refresh", ["dedup"]); a command in
    a `backtick span` ends at its closing backtick; `$VAR` and `${{ env.VAR }}` take their values from `env`.
    """
    found = []
    for line in text.replace("\\\n", " ").splitlines():
        for match in COMMAND.finditer(line):
            tail = line[match.end():]
            if line[:match.start()].count("`") % 2:
                tail = tail.split("`", 1)[0]
            for name, value in (env or {}).items():
                tail = re.sub(r"\$\{\{\s*env\." + name + r"\s*\}\}|\$\{?" + name + r"\b\}?", value, tail)
            lexer = shlex.shlex(REDIRECT.sub(" ", tail), posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            argv = []
            for token in lexer:  # comments (`# v1 from ...`) are dropped by the lexer
                if token in CONTROL:
                    break
                argv.append(token)
            found.append((match.group(1), argv))
    return found


def check_command(module: str, argv: list[str]) -> None:
    args = PARSERS[module]().parse_args(argv)  # a wrong flag raises ConfigError with the parser's message
    assert not any("$" in a for a in argv), (module, argv)
    if module == "publish" and args.recipe == "MODEL_DIR":  # a trained model directory, published to a model repo
        assert publish.REPO_ID.fullmatch(args.repo), args.repo
        return
    assert args.recipe in names(), argv
    config = load_recipe(args.recipe).config()
    assert load_recipe(args.recipe).refresh is not None, f"{args.recipe} cannot be refreshed"
    if module == "refresh":  # as refresh applies them: each --set may hold several, split on whitespace
        apply_overrides(config, [s for group in args.overrides for s in group.split()])
    else:
        assert publish.REPO_ID.fullmatch(args.repo), args.repo


def cron_ok(expression: str) -> bool:
    """`17 3 * * *` -> True; fields are `*`, numbers, ranges, lists and steps within each field's range."""
    fields = expression.split()
    if len(fields) != 5:
        return False
    for field, (low, high) in zip(fields, CRON_RANGES):
        for part in field.split(","):
            match = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?", part)
            if not match:
                return False
            numbers = [int(n) for n in match.groups()[1:3] if n is not None]
            if any(not low <= n <= high for n in numbers) or match.group(4) == "0":
                return False
    return True


def unit(path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def test_readme_commands_parse_and_name_every_flag_of_the_section():
    section = README.split("## Refresh and publish", 1)[1].split("\n## ", 1)[0]
    found = commands(README)
    assert {m for m, _ in commands(section)} == {"refresh", "publish"}
    for module, argv in found:
        check_command(module, argv)
    flags = {o for make in PARSERS.values() for a in make()._actions for o in a.option_strings}
    mentioned = set(re.findall(r"(?<![-\w])(--[a-z][a-z-]*)", section))
    assert {"--set", "--dry-run", "--repo"} <= mentioned <= flags, mentioned - flags
    for name in ("crontab", "convoforge-refresh.service", "convoforge-refresh.timer", "github-actions-refresh.yml"):
        assert f"(docs/schedule/{name})" in section, name


def test_schedule_files_start_with_a_comment_and_their_commands_parse():
    env = {k: str(v) for k, v in workflow()["env"].items()}
    for path in (CRONTAB, SERVICE, TIMER, WORKFLOW):
        assert path.read_text().startswith("#"), path
    for path in (CRONTAB, SERVICE, WORKFLOW):
        found = commands(path.read_text(), env)
        assert {"refresh", "publish"} <= {m for m, _ in found}, path
        for module, argv in found:
            check_command(module, argv)


def test_crontab_line_refreshes_then_publishes():
    jobs = [line for line in CRONTAB.read_text().splitlines()
            if line.strip() and not line.startswith("#") and not re.match(r"\w+=", line)]
    assert len(jobs) == 1
    assert cron_ok(" ".join(jobs[0].split()[:5])), jobs[0]
    assert "%" not in jobs[0]  # cron turns % into a newline
    assert "flock" not in jobs[0]  # the refresh locks itself
    assert re.search(r"pipelines\.refresh [^;]*&& [^;]*pipelines\.publish", jobs[0])
    assert "HF_TOKEN=" not in jobs[0]


def test_systemd_units():
    service, timer = unit(SERVICE), unit(TIMER)
    assert service["Service"]["Type"] == "oneshot"
    assert "75" in service["Service"]["SuccessExitStatus"].split()
    assert service["Service"]["WorkingDirectory"] and service["Service"]["EnvironmentFile"]
    assert not re.search(r"^Environment=.*HF_TOKEN", SERVICE.read_text(), re.M)  # the token stays in the file
    starts = [line for line in SERVICE.read_text().splitlines() if line.startswith("ExecStart=")]
    assert ["pipelines.refresh" in starts[0], "pipelines.publish" in starts[1]] == [True, True]
    assert timer["Timer"]["OnCalendar"] and timer["Timer"]["Persistent"] == "true"
    assert timer["Timer"]["RandomizedDelaySec"]
    assert timer["Timer"].get("Unit", SERVICE.name) == SERVICE.name
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_github_workflow():
    flow = workflow()
    on = flow.get("on", flow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert cron_ok(on["schedule"][0]["cron"]) and "workflow_dispatch" in on
    assert flow["concurrency"]["group"] and flow["concurrency"]["cancel-in-progress"] is False
    steps = flow["jobs"]["refresh"]["steps"]
    runs = [step.get("run", "") for step in steps]
    assert "pip install torch==2.13.0 -e ." in runs
    uses = [step.get("uses", "") for step in steps]
    order = [uses.index("actions/cache/restore@v4"), next(i for i, r in enumerate(runs) if "pipelines.refresh" in r),
             uses.index("actions/cache/save@v4"), next(i for i, r in enumerate(runs) if "pipelines.publish" in r)]
    assert order == sorted(order)
    root = "refresh/${{ env.RECIPE }}"  # refresh's default root, refresh/<recipe>
    assert steps[order[0]]["with"]["path"] == steps[order[2]]["with"]["path"] == root
    with_token = [i for i, step in enumerate(steps) if "HF_TOKEN" in (step.get("env") or {})]
    assert with_token == [order[3]] and steps[order[3]]["env"]["HF_TOKEN"] == "${{ secrets.HF_TOKEN }}"


def test_the_helpers_on_known_cases():
    assert commands("cd /x && .venv/bin/python -m pipelines.refresh dedup >> r.log 2>&1 && python -m "
                    "pipelines.publish $R --repo ORG/NAME; echo done", {"R": "dedup"}) == [
        ("refresh", ["dedup"]), ("publish", ["dedup", "--repo", "ORG/NAME"])]
    assert commands("run `python -m pipelines.refresh dedup --set 'sources=a b'` once") == [
        ("refresh", ["dedup", "--set", "sources=a b"])]
    assert [cron_ok(e) for e in ("17 3 * * *", "*/15 0-6 1,15 * 1-5", "17 3 * *", "60 3 * * *", "* * * 13 *")] == [
        True, True, False, False, False]
