"""`python -m pipelines.refresh`: versions from new inputs only, deduped against every earlier version, with a lock."""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
from datasets import load_dataset

from conftest import ROOT
from pipelines.refresh import LOCKED
from pipelines.release.cards import validate_card

SHAREGPT = Path(__file__).parent / "data" / "formats"


def refresh(root: Path, *args: str, recipe: str = "dedup") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.refresh", recipe, "--root", str(root), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, env={**os.environ, "COLUMNS": "200"})


FILLER = ("people have studied this for centuries and written many books about what they found while others kept "
          "asking new questions about how it works why it matters where it started and who first described it in "
          "detail for a wide audience of readers and several teachers")  # 50 distinct words: long enough rows


def conversation(i: int, words: str) -> dict:
    return {"messages": [{"role": "user", "content": f"Question {i}: tell me about {words}."},
                         {"role": "assistant", "content": f"Answer {i} on {words}: {FILLER}."}]}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


TOPICS = ["rivers of europe", "the history of tea", "sorting algorithms", "how bees dance", "volcanoes",
          "the printing press", "bread baking", "tidal forces", "the game of go", "paper folding", "glass making",
          "migrating birds"]


def version_ids(root: Path, tag: str) -> list[str]:
    return [i for f in sorted((root / "versions" / tag / "data").glob("*.parquet"))
            for i in pq.read_table(f, columns=["id"])["id"].to_pylist()]


def test_two_refreshes_add_only_new_rows_and_never_repeat_one(tmp_path):
    inputs, root = tmp_path / "in", tmp_path / "root"
    inputs.mkdir()
    write_jsonl(inputs / "a.jsonl", [conversation(i, t) for i, t in enumerate(TOPICS[:8])])
    first = refresh(root, "--set", f"sources={inputs}/*.jsonl?license=cc-by-4.0")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "v1 adds 8 rows" in first.stdout

    # b.jsonl: 4 new rows, 2 copies of a's rows (exact) and 1 near copy (one word changed).
    near = conversation(1, TOPICS[1])
    near["messages"][1]["content"] = near["messages"][1]["content"].replace("several teachers", "several students")
    write_jsonl(inputs / "b.jsonl", [conversation(i, t) for i, t in enumerate(TOPICS[8:], start=8)]
                + [conversation(0, TOPICS[0]), conversation(2, TOPICS[2]), near])
    dry = refresh(root, "--dry-run")  # the overrides saved by the first run are used again
    assert dry.returncode == 0 and "would make v2 from 1 new input" in dry.stdout and "b.jsonl" in dry.stdout
    assert "a.jsonl" not in dry.stdout.split("would make")[1]
    assert not (root / "work" / "v2").exists() and not (root / "versions" / "v2").exists()

    second = refresh(root)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "v2 adds 4 rows" in second.stdout
    v1, v2 = version_ids(root, "v1"), version_ids(root, "v2")
    assert len(v1) == 8 and len(v2) == 4 and not set(v1) & set(v2)
    dropped = pl.read_parquet(root / "work" / "v2" / "quarantine.parquet")["reason"].to_list()
    assert sum("(indexed)" in r for r in dropped) == 3, dropped  # both copies and the near copy of v1's rows

    manifest = json.loads((root / "manifest.json").read_text())
    assert [len(v["inputs"]) for v in manifest["versions"]] == [1, 1]
    assert Path(manifest["versions"][1]["inputs"][0]["path"]).name == "b.jsonl"
    assert manifest["versions"][1]["dropped"] == {"exact_duplicate": 2, "near_duplicate": 1}
    changelog = (root / "CHANGELOG.md").read_text()
    assert changelog.index("## v2") < changelog.index("## v1") and "Rows added: 4 (train: 4)" in changelog

    dataset = load_dataset(str(root / "dataset"), cache_dir=str(tmp_path / "hf"))
    assert dataset["train"].num_rows == 12 and len(set(dataset["train"]["id"])) == 12
    card = (root / "dataset" / "README.md").read_text()
    assert validate_card(card, root / "dataset") == []
    assert "license: cc-by-4.0" in card and "Version **v2**" in card and "### v1" in card
    assert (root / "versions" / "v2" / "README.md").read_text() == card

    again = refresh(root)  # no new input: no build, no version
    assert again.returncode == 0 and "no new input" in again.stdout
    assert not (root / "work" / "v3").exists() and len(json.loads((root / "manifest.json").read_text())
                                                      ["versions"]) == 2


def test_a_changed_file_is_new_and_its_old_rows_are_dropped(tmp_path):
    inputs, root = tmp_path / "in", tmp_path / "root"
    inputs.mkdir()
    path = write_jsonl(inputs / "a.jsonl", [conversation(i, t) for i, t in enumerate(TOPICS[:5])])
    assert refresh(root, "--set", f"sources={path}").returncode == 0
    write_jsonl(path, [conversation(i, t) for i, t in enumerate(TOPICS[:7])])  # two rows appended
    proc = refresh(root)
    assert proc.returncode == 0 and "v2 adds 2 rows" in proc.stdout, proc.stdout[-1500:] + proc.stderr[-1500:]


def test_a_second_refresh_while_one_runs_exits_with_the_lock_code(tmp_path):
    inputs, root = tmp_path / "in", tmp_path / "root"
    inputs.mkdir()
    write_jsonl(inputs / "a.jsonl", [conversation(i, t) for i, t in enumerate(TOPICS[:4])])
    root.mkdir()
    with open(root / "refresh.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242, started earlier")
        held.flush()
        busy = refresh(root, "--set", f"sources={inputs}/a.jsonl")
    assert busy.returncode == LOCKED == 75
    assert "another refresh of dedup is running (pid 4242" in busy.stderr
    assert not (root / "work").exists() and not (root / "manifest.json").exists()
    free = refresh(root, "--set", f"sources={inputs}/a.jsonl")  # the kernel released the lock with the file
    assert free.returncode == 0 and "v1 adds 4 rows" in free.stdout


def test_a_recipe_without_sources_and_index_is_refused(tmp_path):
    proc = refresh(tmp_path / "root", "--set", "sources=x.jsonl", recipe="ingest")
    assert proc.returncode == 2
    assert "recipe ingest cannot be refreshed" in proc.stderr
    assert "dedup" in proc.stderr and "orca" in proc.stderr


def test_refresh_with_a_teacher_asks_only_about_new_inputs(tmp_path, teacher_server):
    """orca on the embedded teacher: v2 sends requests for the new file's prompts only; v3 (nothing new) none."""
    inputs, root = tmp_path / "in", tmp_path / "root"
    inputs.mkdir()
    old = ["What is 12 plus 30?", "Name the largest planet in the solar system."]
    new = ["Which is heavier, a kilogram of iron or a kilogram of feathers?",
           "What colour do you get by mixing blue and yellow paint?"]
    write_jsonl(inputs / "a.jsonl", [{"instruction": q, "input": "", "output": "-"} for q in old])
    overrides = (f"teacher.base_url={teacher_server.base_url}", f"teacher.model={teacher_server.model}",
                 "sampling.max_tokens=32", "keep_truncated=true", "retries=1", f"sources={inputs}/*.jsonl")
    settings = [arg for item in overrides for arg in ("--set", item)]
    first = refresh(root, *settings, recipe="orca")
    assert first.returncode == 0 and "v1 adds" in first.stdout, first.stdout[-3000:] + first.stderr[-2000:]

    write_jsonl(inputs / "b.jsonl", [{"instruction": q, "input": "", "output": "-"} for q in new])
    second = refresh(root, recipe="orca")
    assert second.returncode == 0 and "v2 adds" in second.stdout, second.stdout[-3000:] + second.stderr[-2000:]
    v2 = json.loads((root / "manifest.json").read_text())["versions"][-1]
    asked = pl.read_parquet(root / "work" / "v2" / "00_prompts" / "part-*.parquet")["prompt"].to_list()
    assert sorted(asked) == sorted(new)  # the old file's prompts were not sent again
    assert v2["requests"] >= len(new)
    first_requests = json.loads((root / "manifest.json").read_text())["versions"][0]["requests"]
    assert first_requests >= len(old)

    third = refresh(root, recipe="orca")
    assert third.returncode == 0 and "no new input" in third.stdout
    assert "starting embedded " not in third.stderr and not (root / "work" / "v3").exists()
    published = [i for tag in ("v1", "v2") for f in (root / "versions" / tag / "data").glob("*.parquet")
                 for i in pq.read_table(f, columns=["prompt_id"])["prompt_id"].to_pylist()]
    assert len(published) == len(set(published))


def test_a_failed_refresh_leaves_its_inputs_for_the_next_run(tmp_path):
    inputs, root = tmp_path / "in", tmp_path / "root"
    inputs.mkdir()
    write_jsonl(inputs / "a.jsonl", [conversation(i, t) for i, t in enumerate(TOPICS[:5])])
    missing = refresh(root, "--set", f"sources={inputs}/a.jsonl", "--set", f"benchmarks={inputs}/missing.jsonl")
    assert missing.returncode == 2 and "benchmark file" in missing.stderr and "missing.jsonl does not exist" in \
        missing.stderr and not (root / "manifest.json").exists()
    failed = refresh(root, "--set", f"sources={inputs}/a.jsonl", "--set", "kind=preference")  # fails in the build
    assert failed.returncode == 2 and "this recipe needs preference records" in failed.stderr, failed.stderr
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["versions"] == [] and "pending" not in manifest
    fixed = refresh(root, "--set", f"sources={inputs}/a.jsonl")
    assert fixed.returncode == 0 and "v1 adds 5 rows" in fixed.stdout, fixed.stderr[-1500:]


def test_a_killed_refresh_resumes_the_same_version_with_the_same_inputs(tmp_path):
    inputs, root = tmp_path / "in", tmp_path / "root"
    inputs.mkdir()
    rng = random.Random(7)
    vocabulary = [f"w{k}" for k in range(5000)]
    write_jsonl(inputs / "a.jsonl", [{"messages": [
        {"role": "user", "content": " ".join(rng.choices(vocabulary, k=20))},
        {"role": "assistant", "content": " ".join(rng.choices(vocabulary, k=60))}]} for _ in range(40_000)])
    cmd = [sys.executable, "-m", "pipelines.refresh", "dedup", "--root", str(root), "--set", f"sources={inputs}/*"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        manifest = root / "manifest.json"
        if manifest.exists() and "pending" in json.loads(manifest.read_text()):
            proc.kill()
            break
        time.sleep(0.01)
    assert proc.wait() == -signal.SIGKILL, "the refresh finished before it could be killed"
    assert not (root / "versions" / "v1").exists()

    write_jsonl(inputs / "b.jsonl", [conversation(9, TOPICS[9])])  # arrives meanwhile: left for the next version
    resumed = refresh(root)
    assert resumed.returncode == 0 and "v1 adds 40000 rows" in resumed.stdout, resumed.stderr[-1500:]
    manifest = json.loads((root / "manifest.json").read_text())
    assert "pending" not in manifest and [Path(f["path"]).name for f in manifest["versions"][0]["inputs"]] == [
        "a.jsonl"]
    assert "v2 adds 1 rows" in refresh(root).stdout
    assert not list((root / "work" / "v1").glob("0*_*"))  # the older build keeps its report, not its parts
    assert (root / "work" / "v1" / "report.json").exists()
