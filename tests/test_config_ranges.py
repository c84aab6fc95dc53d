"""Every numeric setting declares its range (issue 15), checked when the config is resolved, before any work.

Each int and float field of every recipe's config (nested ones too: teacher, judge, sampling) is tried through the real
CLI just outside its range, where the build must stop with one `error:` line naming the key and write nothing, and at
its edges, which `--show-config` must accept.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from pipelines import build, refresh
from pipelines.core.config import Range, field_range, flat_keys, is_numeric, leaves
from pipelines.core.errors import ConfigError
from pipelines.dedup.index import MinHashIndex
from pipelines.recipes import load_recipe, names
from pipelines.train.options import DPOOptions, SFTOptions

NUMERIC = [(name, key, f, hint) for name in names() for key, f, hint, _ in leaves(load_recipe(name).config())
           if is_numeric(hint)]
TRAIN_NUMERIC = [(cls.command, key, f) for cls in (SFTOptions, DPOOptions)
                 for key, f, hint, _ in leaves(cls(export_dir="x")) if is_numeric(hint)]
# What an edge value of these keys needs besides, so the config's cross-field rules (`cross_check`) hold.
def judge_calibration() -> str:
    """A calibration file of ultrafeedback's default judge with agreement 1.0: every judge_* edge then holds."""
    from pipelines.core.calibration import Calibration
    from pipelines.recipes.ultrafeedback import Config
    from pipelines.stages.judge import judge_identity

    path = Path(tempfile.mkdtemp(prefix="calibration-")) / "calibration.json"
    Calibration(judge_identity(Config().judge, "pointwise", 2), [0.0], [1.0],
                {"calibrated_agreement": 1.0, "calibrated_agreement_ci": [1.0, 1.0], "pairs": 10}, {}).save(path)
    return f"judge_calibration={path}"


CALIBRATION = judge_calibration()
COMPANIONS = {
    ("ultrafeedback", "judge_min_confidence"): [CALIBRATION],
    ("ultrafeedback", "judge_require_agreement"): [CALIBRATION],
    ("dedup", "num_perm"): ["bands=1", "rows=1"],
    ("dedup", "bands"): ["rows=1", "num_perm=8192"],
    ("dedup", "rows"): ["bands=1", "num_perm=8192"],
    ("ultrachat", "turns"): ["min_turns=1"],
    ("ultrachat", "min_turns"): ["turns=64"],
    ("self_instruct", "min_words"): ["max_words=10000"],
    ("self_instruct", "max_words"): ["min_words=1"],
}


def is_int(hint) -> bool:
    return "int" in str(hint)


def nudge(x: float) -> float:
    return 1e-6 * max(1.0, abs(x))


def outside(r: Range, integer: bool) -> list[str]:
    """Values just below the minimum and just above the maximum (none on an infinite side)."""
    out = []
    if r.lo != float("-inf"):
        out.append(r.lo if r.lo_open else r.lo - (1 if integer else nudge(r.lo)))
    if r.hi != float("inf"):
        out.append(r.hi if r.hi_open else r.hi + (1 if integer else nudge(r.hi)))
    out = [str(int(v)) if integer else repr(float(v)) for v in out]
    return out if integer else out + ["nan", "inf", "-inf"]


def edges(r: Range, integer: bool) -> list[str]:
    """The smallest and largest values allowed (a finite stand-in on an infinite side)."""
    values = []
    if r.lo != float("-inf"):
        values.append(r.lo + nudge(r.lo) if r.lo_open else r.lo)
    if r.hi != float("inf"):
        values.append(r.hi - nudge(r.hi) if r.hi_open else r.hi)
    return [str(int(v)) if integer else repr(float(v)) for v in values]


def ids(params) -> list[str]:
    return [f"{name}:{key}" for name, key, *_ in params]


@pytest.fixture
def no_server(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a teacher was started for a config that should have been refused")
    monkeypatch.setattr("pipelines.teacher.client.Teacher.__init__", refuse)


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_every_numeric_setting_declares_a_range_its_default_is_in():
    assert len(NUMERIC) > 50  # teacher, judge and sampling keys are walked too
    for name, key, f, hint in NUMERIC:
        r = field_range(f)
        assert r is not None, f"{name}: {key} has no metadata range, e.g. metadata={{'range': '[1, 100]'}}"
        default = flat_keys(load_recipe(name).config())[key]
        if default is not None:
            assert all(v in r for v in (default if isinstance(default, tuple) else (default,))), (name, key, r)
    for name in names():  # a range on a non-numeric field is a mistake, and every key has help
        for key, f, hint, _ in leaves(load_recipe(name).config()):
            assert is_numeric(hint) or "range" not in f.metadata, (name, key)
            assert f.metadata.get("help"), f"{name}: {key} has no help"


@pytest.mark.parametrize(("name", "key", "f", "hint"), NUMERIC, ids=ids(NUMERIC))
def test_out_of_range_values_stop_the_build_before_any_work(name, key, f, hint, tmp_path, capsys, no_server):
    r = field_range(f)
    for bad in outside(r, is_int(hint)):
        run_dir = tmp_path / "r"
        assert build.main([name, "--set", f"{key}={bad}", "--run-dir", str(run_dir)]) == 2, (key, bad)
        line = one_error(capsys)
        assert line.startswith(f"error: --set {key}=") and "must be" in line, line
        assert r.words() in line, line
        assert not run_dir.exists()


@pytest.mark.parametrize(("name", "key", "f", "hint"), NUMERIC, ids=ids(NUMERIC))
def test_values_at_the_edges_of_the_range_are_accepted(name, key, f, hint, capsys):
    for good in edges(field_range(f), is_int(hint)):
        argv = [name, "--show-config", "--set", f"{key}={good}",
                *(x for s in COMPANIONS.get((name, key), []) for x in ("--set", s))]
        assert build.main(argv) == 0, (key, good, capsys.readouterr().err)
        capsys.readouterr()


def test_range_words():
    assert Range.parse("[1, 128]").words() == "between 1 and 128"
    assert Range.parse("(0, 1]").words() == "greater than 0 and at most 1"
    assert Range.parse("[0, inf)").words() == "at least 0"
    assert Range.parse("[0, 1)").words() == "at least 0 and less than 1"
    assert float("nan") not in Range.parse("[0, inf)") and float("inf") not in Range.parse("[0, inf)")
    with pytest.raises(ValueError):
        Range.parse("1..128")


@pytest.mark.parametrize(("name", "sets", "needles"), [
    ("dedup", ["bands=32"], ["bands x rows", "32 x 8", "num_perm (128)"]),
    ("dedup", ["num_perm=16"], ["bands x rows", "16 x 8", "num_perm (16)"]),
    ("ultrachat", ["turns=1"], ["min_turns (2)", "turns (1)"]),
    ("self_instruct", ["min_words=20", "max_words=10"], ["min_words (20)", "max_words (10)"]),
    ("dedup", ["bands=1.5"], ["bands", "expected int"]),
    ("ultrafeedback", ["temperatures=0.7,2.5"], ["temperatures=0.7,2.5", "each value must be between 0 and 2"]),
    ("ultrafeedback", ["temperatures="], ["temperatures", "at least one value"]),
    ("ultrafeedback", ["judge.pool=http://x/v1?model=m&weight=0"], ["judge.pool", "weight", "greater than 0"]),
    ("dedup", ["compare=words"], ["compare=words", "one of conversation, prompt"]),
    ("ingest", ["kind=chat"], ["kind=chat", "one of conversation, preference, text"]),
    ("ingest", ["redact=some"], ["redact=some", "chat_logs, all, none"]),
    ("ultrafeedback", ["rule=best"], ["rule=best", "best_vs_random"]),
    ("ultrafeedback", ["second_judge=qwen"], ["second_judge is a group, off by default", "second_judge.base_url="]),
    ("ultrafeedback", ["second_judge.max_concurrency=0"], ["second_judge.max_concurrency=0", "between 1 and 4096"]),
    ("ultrafeedback", ["second_judge_mode=vote"], ["second_judge_mode=vote", "listwise"]),
])
def test_other_config_errors_are_one_line_before_any_work(name, sets, needles, tmp_path, capsys, no_server):
    run_dir = tmp_path / "r"
    assert build.main([name, *(x for s in sets for x in ("--set", s)), "--run-dir", str(run_dir)]) == 2
    line = one_error(capsys)
    assert all(n in line for n in needles), line
    assert not run_dir.exists()


def test_an_optional_group_is_off_until_one_of_its_keys_is_set():
    """`second_judge` is None by default; a key of it turns it on with the group's defaults for the rest, `=none`
    turns it off again."""
    from pipelines.core.config import apply_overrides
    from pipelines.recipes.ultrafeedback import Config
    from pipelines.teacher.config import TeacherConfig

    assert Config().second_judge is None
    on = apply_overrides(Config(), ["second_judge.model=m", "second_judge.base_url=http://127.0.0.1:1/v1"])
    assert on.second_judge == TeacherConfig(model="m", base_url="http://127.0.0.1:1/v1")
    assert apply_overrides(on, ["second_judge=none"]).second_judge is None
    assert "second_judge.max_cost" in flat_keys(on) and "second_judge" in flat_keys(Config())


def test_an_index_that_is_a_file_is_refused_by_name(tmp_path, capsys, no_server):
    source = tmp_path / "a.jsonl"
    source.write_text('{"text": "hello"}\n')
    index = tmp_path / "index.txt"
    index.write_text("not a directory\n")
    for path, needle in ((index, f"{index} is a file, not a directory"), (index / "sub", f"{index} is a file")):
        run_dir = tmp_path / "r"
        argv = ["dedup", "--set", f"sources={source}", "--set", f"index={path}", "--run-dir", str(run_dir)]
        assert build.main(argv) == 2
        line = one_error(capsys)
        assert line.startswith(f"error: --set index={path}: ") and needle in line, line
        assert not run_dir.exists()
    with pytest.raises(ConfigError, match="is a file"):
        MinHashIndex(index, {})


def test_refresh_checks_ranges_before_it_writes_anything(tmp_path, capsys, no_server):
    root = tmp_path / "refresh"
    assert refresh.main(["dedup", "--root", str(root), "--set", f"sources={tmp_path}/a.jsonl",
                         "--set", "decontamination_ngram=-3"]) == 2
    assert "decontamination_ngram=-3" in one_error(capsys)
    assert not root.exists()


def test_show_config_lists_each_key_with_its_range_and_help(capsys):
    assert build.main(["dedup", "--show-config", "--set", "bands=8"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.split("\nkeys:")[0])["bands"] == 8  # the JSON config is unchanged
    assert "  threshold (0, 1]: estimated Jaccard" in out and "  num_perm [16, 8192]: MinHash permutations" in out
    assert "  index: directory of a persistent near-duplicate index" in out


@pytest.mark.parametrize("command,key,f", TRAIN_NUMERIC, ids=[f"{c}.{k}" for c, k, _ in TRAIN_NUMERIC])
def test_every_train_option_declares_its_range_and_checks_it(command, key, f):
    """Train's options keep the recipes' contract: a range in the field, shown in --help, checked as --flag=value."""
    allowed = field_range(f)
    assert allowed is not None, f"{command} --{key} has no range"
    cls = SFTOptions if command == "sft" else DPOOptions
    assert allowed.lo in allowed or allowed.lo_open  # the range parses and its closed ends are allowed
    outside = allowed.lo - 1 if not allowed.lo_open else allowed.lo
    with pytest.raises(ConfigError, match=f"--{key.replace('_', '-')}="):
        cls(export_dir="x", **{key: type(f.default)(outside)}).validate()
