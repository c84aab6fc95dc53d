"""`python -m pipelines.publish` against a fake Hub (tests/hub_server.py): commits, tags, token handling, dry run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import snapshot_download

from conftest import ROOT
from hub_server import FakeHub
from test_refresh import TOPICS, conversation, refresh, write_jsonl
from schemas import ARROW_SCHEMAS, conversation_id

TOKEN = "hf_test_secret_Zq81xVt0pLmW3"
REPO = "convoforge-test/dedup"
CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
---

# dedup test dataset, v{version}

{total} rows.
"""


def rows(first: int, n: int) -> list[dict]:
    out = []
    for k in range(first, first + n):
        messages = [{"role": "user", "content": f"Question number {k}?"},
                    {"role": "assistant", "content": f"Answer number {k}."}]
        out.append({"id": conversation_id(messages), "messages": messages, "source": f"in{k % 2}.jsonl",
                    "meta": "{}"})
    return out


def make_refresh_root(root: Path, sizes=(6, 4)) -> Path:
    """A refresh root with one version per entry of `sizes` (rows new in that version), per the layout contract:
    manifest.json, CHANGELOG.md, versions/vN/{data/train-vNNNN-00000-of-00001.parquet, README.md}, dataset/.

    Hand-made, so that tests of publish's own logic (later versions, lost tags) need no build; the main test below
    publishes a root made by `python -m pipelines.refresh`.
    """
    schema = ARROW_SCHEMAS["conversation"]
    versions, first, total = [], 0, 0
    (root / "dataset" / "data").mkdir(parents=True, exist_ok=True)
    for version, n in enumerate(sizes, start=1):
        tag, total = f"v{version}", total + n
        base = root / "versions" / tag
        (base / "data").mkdir(parents=True, exist_ok=True)
        name = f"data/train-v{version:04d}-00000-of-00001.parquet"
        pq.write_table(pa.Table.from_pylist(rows(first, n), schema=schema), base / name)
        (base / "README.md").write_text(CARD.format(version=version, total=total))
        (root / "dataset" / name).write_bytes((base / name).read_bytes())
        (root / "dataset" / "README.md").write_text(CARD.format(version=version, total=total))
        inputs = [{"path": f"/data/in/batch{version}.jsonl", "size": 100 * n, "sha256": f"{version:064x}"}]
        versions.append({"version": version, "tag": tag, "created": f"2026-11-2{version}T10:00:00Z",
                         "inputs": inputs, "counts": {"train": n}, "files": [name], "rows_added": n,
                         "requests": 0, "tokens_in": 0, "tokens_out": 0})
        first += n
    (root / "manifest.json").write_text(json.dumps({"recipe": "dedup", "versions": versions}, indent=2))
    (root / "CHANGELOG.md").write_text("".join(f"## {v['tag']}\n\n+{v['rows_added']} rows\n\n" for v in versions))
    return root


def run_publish(hub: FakeHub, home: Path, *args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_TELEMETRY="1", HF_HOME=str(home))  # HF_HOME: no saved login
    if token is not None:
        env["HF_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "pipelines.publish", "dedup", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def hub():
    with FakeHub(token=TOKEN) as server:
        yield server


def refreshed_root(tmp_path: Path) -> Path:
    """Two versions made by `python -m pipelines.refresh dedup`: 6 rows, then 4 new ones."""
    inputs, root = tmp_path / "in", tmp_path / "refresh"
    inputs.mkdir()
    write_jsonl(inputs / "a.jsonl", [conversation(i, t) for i, t in enumerate(TOPICS[:6])])
    assert refresh(root, "--set", f"sources={inputs}/*.jsonl?license=mit").returncode == 0
    write_jsonl(inputs / "b.jsonl", [conversation(i, t) for i, t in enumerate(TOPICS[6:10], start=6)])
    assert refresh(root).returncode == 0
    return root


def test_publish_commits_and_tags_each_version(hub, tmp_path):
    root = refreshed_root(tmp_path)
    proc = run_publish(hub, tmp_path / "home", "--repo", REPO, "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr
    assert [c["type"] for c in hub.created] == ["dataset"]
    repo = hub.repos[REPO]
    assert not repo.private
    commits = repo.user_commits
    assert [c.message for c in commits] == ["v1: +6 rows (train: 6) from 1 new input",
                                            "v2: +4 rows (train: 4) from 1 new input"]
    assert commits[1].parent == commits[0].oid
    for version, commit in enumerate(commits, start=1):
        base = root / "versions" / f"v{version}"
        name = f"train-v{version:04d}-00000-of-00001.parquet"
        assert commit.added == {"README.md": (base / "README.md").read_bytes(),
                                f"data/{name}": (base / "data" / name).read_bytes()}
    assert repo.tags == {"v1": commits[0].oid, "v2": commits[1].oid}
    assert repo.tag_messages["v2"].startswith("v2: +4 rows")
    writes = hub.writes()
    assert writes and all(auth == f"Bearer {TOKEN}" for _, _, auth in writes)
    assert [line.split(" ->")[0] for line in proc.stdout.splitlines() if line.startswith("published")] == [
        "published v1", "published v2"]
    assert f"{hub.url}/datasets/{REPO}/tree/v2 (2 files, " in proc.stdout

    # the repo at each tag, downloaded as a user would, loads with the rows up to that version
    for tag, expected in (("v1", 6), ("v2", 10)):
        folder = snapshot_download(REPO, repo_type="dataset", revision=tag, endpoint=hub.url, token=TOKEN,
                                   local_dir=tmp_path / "download" / tag)
        loaded = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "hf" / tag))
        assert list(loaded) == ["train"] and loaded["train"].num_rows == expected
        assert set(loaded["train"].column_names) == {*ARROW_SCHEMAS["conversation"].names, "tools"}
    assert sorted(p.name for p in hub.checkout(REPO, "v1", tmp_path / "v1").rglob("*.parquet")) == [
        "train-v0001-00000-of-00001.parquet"]

    # nothing new: no commit, no tag, exit 0
    before = len(repo.commits)
    again = run_publish(hub, tmp_path / "home", "--repo", REPO, "--root", str(root))
    assert again.returncode == 0, again.stderr
    assert "nothing new" in again.stdout and len(repo.commits) == before and len(repo.tags) == 2
    assert TOKEN not in again.stdout + again.stderr


def test_publish_only_new_versions(hub, tmp_path):
    root = make_refresh_root(tmp_path / "refresh", sizes=(6,))
    assert run_publish(hub, tmp_path / "home", "--repo", REPO, "--root", str(root)).returncode == 0
    make_refresh_root(root, sizes=(6, 4, 3))  # two more refreshes
    proc = run_publish(hub, tmp_path / "home", "--repo", REPO, "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    repo = hub.repos[REPO]
    assert [c.message.split(":")[0] for c in repo.user_commits] == ["v1", "v2", "v3"]
    assert list(repo.tags) == ["v1", "v2", "v3"] and "published v1" not in proc.stdout
    assert len(list(hub.checkout(REPO, "v3", tmp_path / "v3").joinpath("data").glob("*.parquet"))) == 3


def test_rerun_after_a_lost_tag_tags_without_committing(hub, tmp_path):
    """A run killed between the commit and the tag: the rerun's commit changes nothing, so only the tag is made."""
    root = make_refresh_root(tmp_path / "refresh")
    assert run_publish(hub, tmp_path / "home", "--repo", REPO, "--root", str(root)).returncode == 0
    repo = hub.repos[REPO]
    del repo.tags["v2"]
    commits = len(repo.commits)
    proc = run_publish(hub, tmp_path / "home", "--repo", REPO, "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    assert len(repo.commits) == commits and repo.tags["v2"] == repo.commits[-1].oid and "published v2" in proc.stdout


def test_dry_run_makes_no_request(hub, tmp_path):
    root = make_refresh_root(tmp_path / "refresh")
    proc = run_publish(hub, tmp_path / "home", "--repo", REPO, "--root", str(root), "--dry-run", token=None)
    assert proc.returncode == 0, proc.stderr
    assert hub.requests == []
    for version in (1, 2):
        base = root / "versions" / f"v{version}"
        name = f"train-v{version:04d}-00000-of-00001.parquet"
        assert f"{base / 'data' / name} -> data/{name} (" in proc.stdout
        assert f"{base / 'README.md'} -> README.md (" in proc.stdout
        assert f"tag v{version}" in proc.stdout
    assert "v2: +4 rows (train: 4) from 1 new input" in proc.stdout


def test_no_token(hub, tmp_path):
    root = make_refresh_root(tmp_path / "refresh")
    proc = run_publish(hub, tmp_path / "home", "--repo", REPO, "--root", str(root), token=None)
    assert proc.returncode == 2 and "HF_TOKEN" in proc.stderr and proc.stderr.startswith("error: ")
    assert len(proc.stderr.strip().splitlines()) == 1 and hub.requests == []


def test_rejected_token_is_not_printed(tmp_path):
    with FakeHub(token="hf_some_other_token_value") as hub:
        root = make_refresh_root(tmp_path / "refresh")
        proc = run_publish(hub, tmp_path / "home", "--repo", REPO, "--root", str(root))
    assert proc.returncode == 2 and "401" in proc.stderr and "write access" in proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_user_errors(hub, tmp_path):
    missing = run_publish(hub, tmp_path / "home", "--repo", REPO, "--root", str(tmp_path / "nothing"))
    assert missing.returncode == 2
    assert f"no versions under {tmp_path / 'nothing'}; run python -m pipelines.refresh dedup first" in missing.stderr
    root = make_refresh_root(tmp_path / "refresh")
    bad = run_publish(hub, tmp_path / "home", "--repo", "not a repo", "--root", str(root))
    assert bad.returncode == 2 and "ORG/NAME" in bad.stderr
    (root / "versions" / "v2" / "README.md").unlink()
    incomplete = run_publish(hub, tmp_path / "home", "--repo", REPO, "--root", str(root), "--dry-run")
    assert incomplete.returncode == 2 and "v2 is incomplete" in incomplete.stderr
    assert hub.requests == []


def test_a_root_without_a_version_yet_is_not_an_error(hub, tmp_path):
    root = tmp_path / "refresh"
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({"recipe": "dedup", "versions": []}))
    proc = run_publish(hub, tmp_path / "home", "--repo", REPO, "--root", str(root))
    assert proc.returncode == 0 and "nothing to publish yet" in proc.stdout and hub.requests == []


def tiny_model_dir(path: Path) -> Path:
    """A real (tiny, random) Llama checkpoint with SmolLM2's tokenizer and one recorded eval result."""
    import shutil

    import transformers

    from pipelines.teacher.weights import checkpoint_dir
    from pipelines.train.card import record_eval

    config = transformers.LlamaConfig(vocab_size=49152, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1)
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(checkpoint_dir() / name, path / name)
    (path / "checkpoint-10").mkdir()  # a trainer's intermediate state: never uploaded
    (path / "checkpoint-10" / "optimizer.pt").write_bytes(b"x" * 100)
    record_eval(path, "ifeval_dev", {"scored": 20, "score": [0.25, 0.1, 0.45]}, path / "ev", None)
    return path


def test_a_model_dir_publishes_to_a_model_repo_with_its_card(hub, tmp_path):
    from huggingface_hub import ModelCard

    model = tiny_model_dir(tmp_path / "tiny-sft")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_TELEMETRY="1", HF_HOME=str(tmp_path / "home"), HF_TOKEN=TOKEN)
    publish = lambda *a: subprocess.run([sys.executable, "-m", "pipelines.publish", str(model), *a],  # noqa: E731
                                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    proc = publish("--repo", "convoforge-test/tiny-sft")
    assert proc.returncode == 0, proc.stderr
    assert [c["type"] for c in hub.created] == ["model"] and TOKEN not in proc.stdout + proc.stderr
    tree = hub.checkout("convoforge-test/tiny-sft", "main", tmp_path / "out")
    uploaded = sorted(p.name for p in tree.rglob("*") if p.is_file() and p.name != ".gitattributes")
    assert uploaded == sorted(["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                               "tokenizer_config.json", "README.md", "eval_results.json"])
    assert (tree / "model.safetensors").read_bytes() == (model / "model.safetensors").read_bytes()
    card = ModelCard.load(tree / "README.md")
    assert card.data.model_name == "tiny-sft" and card.data.eval_results[0].metric_value == 0.25
    assert card.data.eval_results[0].dataset_name == "convoforge's IFEval-type dev set"
    again = publish("--repo", "convoforge-test/tiny-sft")
    assert again.returncode == 0 and "nothing new" in again.stdout, again.stderr
    assert len(hub.repos["convoforge-test/tiny-sft"].user_commits) == 1
    no_gguf = publish("--repo", "convoforge-test/tiny-sft", "--gguf")
    assert no_gguf.returncode != 0 and no_gguf.stderr.strip().splitlines()[-1] == (
        f"error: {model} has no gguf/model-*.gguf: run python -m pipelines.train export {model}")
