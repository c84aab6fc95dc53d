"""`--engine ray` gives the rows, drops and dedup decisions of the local engine (a local Ray instance, 2 CPUs)."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil
import pytest
import ray  # noqa: F401  (the dev extra installs it: a missing Ray fails here, it is not skipped)

from pipelines.core.config import apply_overrides
from pipelines.core.parts import read_parts
from pipelines.core.runner import Runner, rebatch
from pipelines.core.stage import Context
from pipelines.dedup.lsh import band_keys, candidate_pairs, components, large_star, min_equal, similar_pairs, small_star
from pipelines.dedup.minhash import MinHashParams, signatures
from pipelines.engines.ray import RayEngine, batch_plan, read_batch
from pipelines.recipes import load_recipe, names
from pipelines.stages.dedup import NearDedup
from tests.conftest import ROOT

DATA = Path(__file__).parent / "data"

RAY_NEAR = """import sys, ray
ray.init(address="local", num_cpus=2, object_store_memory=300 * 2**20, include_dashboard=False)
from pathlib import Path
from pipelines.core.runner import Runner
from pipelines.core.stage import Context
from pipelines.engines.ray import RayEngine
from pipelines.stages.dedup import NearDedup
stage = NearDedup(index=sys.argv[4] if len(sys.argv) > 4 else "")
stage.batch_size = int(sys.argv[3])
Runner([stage], Context(run_dir=Path(sys.argv[2]), config={}), RayEngine()).run_on(stage, Path(sys.argv[1]))
"""

RAY_BUILD = """import sys, ray
ray.init(address="local", num_cpus=2, object_store_memory=500 * 2**20, include_dashboard=False)
from pipelines.build import main
sys.exit(main(sys.argv[1:]))
"""


def write_corpus(path: Path, n: int, seed: int = 0) -> dict:
    """A ShareGPT JSONL of `n` records from a seeded RNG: ~5% exact copies, ~5% near copies (a few words changed),
    a templated family of 100 records (one LSH bucket bigger than ALL_PAIRS_UP_TO), some records with no words,
    e-mail addresses to redact, a few benchmark prompts, and a few bad lines. Returns what it planted."""
    rng = np.random.default_rng(seed)
    vocabulary = np.array([f"w{i}" for i in range(20_000)])
    template = " ".join(vocabulary[rng.integers(0, len(vocabulary), 120)])
    benchmark = [" ".join(vocabulary[rng.integers(0, len(vocabulary), 20)]) for _ in range(3)]
    records, planted = [], {"exact": 0, "near": 0, "bad": 0}

    def text(words: int) -> str:
        return " ".join(vocabulary[rng.integers(0, len(vocabulary), words)])

    for i in range(n):
        roll = rng.random()
        if i > 100 and roll < 0.05:
            records.append(records[rng.integers(0, len(records))])
            planted["exact"] += 1
            continue
        if i > 100 and roll < 0.10:
            copy = json.loads(records[rng.integers(0, len(records))])
            words = copy["conversations"][-1]["value"].split()
            for _ in range(rng.integers(1, 3)):
                words[rng.integers(0, len(words))] = str(vocabulary[rng.integers(0, len(vocabulary))])
            copy["conversations"][-1]["value"] = " ".join(words)
            records.append(json.dumps(copy))
            planted["near"] += 1
            continue
        if 1000 <= i < 1100:  # templated: one big bucket; a unique tail keeps them distinct
            turns = [text(10), template + " " + text(3)]
        elif i % 5000 == 17:  # no words at all: takes no part in near-dedup
            turns = ["?!", "..."]
        else:
            turns = [text(int(rng.integers(15, 60))) for _ in range(int(rng.integers(1, 3)) * 2)]
            if i % 997 == 3:
                turns[0] += f" mail me at user{i}@example.com"
            if i % 4999 == 11:
                turns[0] = benchmark[i % 3] + " " + turns[0]
        conversation = [{"from": "human" if t % 2 == 0 else "gpt", "value": v} for t, v in enumerate(turns)]
        records.append(json.dumps({"id": f"r{i}", "conversations": conversation}))
    lines = list(records)
    for k, bad in enumerate(('{"conversations": [', '{"conversations": [{"from": "alien", "value": "hi"}]}',
                             '{"conversations": [{"from": "human", "value": 7}]}')):
        lines.insert(1 + 997 * (k + 1), bad)
        planted["bad"] += 1
    path.write_text("\n".join(lines) + "\n")
    prompts = "".join(json.dumps({"question": q, "answer": "42"}) + "\n" for q in benchmark)  # GSM8K-shaped
    (path.parent / "benchmark.jsonl").write_text(prompts)
    return planted


def write_parts(parts: Path, n: int, seed: int = 0, rows_per_part: int = 7_000) -> Path:
    """`n` rows of `id` and `text` in Parquet parts of 7,000 rows (a batch of near-dedup spans two parts): random
    words, 10% near copies (a word or two changed) of an earlier row, often in another part, a templated family of
    150 rows (one bucket past ALL_PAIRS_UP_TO) and rows with no words."""
    rng = np.random.default_rng(seed)
    vocabulary = np.array([f"w{i}" for i in range(20_000)])
    template = " ".join(vocabulary[:150])
    texts: list[str] = []
    for i in range(n):
        if i > 100 and rng.random() < 0.10:
            words = texts[int(rng.integers(0, len(texts)))].split()
            for _ in range(int(rng.integers(1, 3))):
                words[int(rng.integers(0, len(words)))] = "changed"
            texts.append(" ".join(words))
        elif 1000 <= i < 1150:
            texts.append(f"{template} tail{i} {i % 7}")
        elif i % 5000 == 17:
            texts.append("?! ...")
        else:
            texts.append(" ".join(vocabulary[rng.integers(0, len(vocabulary), int(rng.integers(20, 80)))]))
    frame = pl.DataFrame({"id": [f"r{i}" for i in range(n)], "text": texts})
    parts.mkdir(parents=True)
    for k, start in enumerate(range(0, n, rows_per_part)):
        frame.slice(start, rows_per_part).write_parquet(parts / f"part-{k:05d}.parquet")
    return parts


def near_local(parts: Path, run_dir: Path, batch_size: int = NearDedup.batch_size) -> None:
    stage = NearDedup()
    stage.batch_size = batch_size
    Runner([stage], Context(run_dir=run_dir, config={})).run_on(stage, parts)


def near_ray(parts: Path, run_dir: Path, batch_size: int = NearDedup.batch_size) -> subprocess.Popen:
    """NearDedup alone on Ray (a local instance of 2 CPUs, 300 MB of object store), in a process group of its own."""
    script = run_dir.parent / "ray_near.py"
    script.write_text(RAY_NEAR)
    return subprocess.Popen([sys.executable, str(script), str(parts), str(run_dir), str(batch_size)], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def near_outcome(run_dir: Path) -> dict:
    stage = run_dir / "01_dedup_near"
    done = json.loads((stage / "_SUCCESS.json").read_text())
    return {"kept": pl.read_parquet(stage / "part-*.parquet"), "dropped": pl.read_parquet(stage / "dropped.parquet"),
            "clusters": pl.read_parquet(run_dir / "dedup" / "clusters.parquet"),
            **{k: done[k] for k in ("rows_in", "rows_out", "dropped", "counters")},
            "near": {k: v for k, v in done["summary"]["near"].items() if k != "index"}}


def test_the_ray_plan_gives_the_local_dedup_on_200k_documents(tmp_path):
    """Same kept rows in the same parts, same drop reasons, same clusters (ids, keepers, agreements, previews) and
    the same summary, from a plan where no process held every signature."""
    parts = write_parts(tmp_path / "parts", 200_000)
    near_local(parts, tmp_path / "local")
    proc = near_ray(parts, tmp_path / "ray")
    assert proc.wait() == 0, proc.stderr.read()[-3000:]
    local, distributed = near_outcome(tmp_path / "local"), near_outcome(tmp_path / "ray")
    for key in local:
        assert local[key].equals(distributed[key]) if isinstance(local[key], pl.DataFrame) else \
            local[key] == distributed[key], key
    assert local["near"]["pairs"] > 5_000 and local["dropped"]["near_duplicate"] > 5_000
    clusters = local["clusters"]
    assert clusters.group_by("cluster").len()["len"].max() >= 150  # the templated family
    plan = json.loads((tmp_path / "ray" / "dedup" / "plan.json").read_text())
    assert plan["shards"] == 4 and plan["partitions"] == 2 and not (tmp_path / "ray" / "dedup" / "plan").exists()
    assert [s["step"] for s in plan["steps"]][:4] == ["sign", "buckets", "attach", "verify"]
    assert sum(s["pairs"] for s in plan["steps"]) == local["near"]["pairs"]


def ray_plan_workers(udf: str = "_PlanStep") -> list[psutil.Process]:
    """Ray worker processes running a task of `udf` now (Ray titles a busy worker with its task)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if (process.info["cmdline"] or [""])[0].startswith(f"ray::MapBatches({udf})"):
            found.append(process)
    return found


def test_a_killed_ray_plan_resumes_where_it_stopped(tmp_path):
    """The driver killed after the verify step began, then a worker killed mid-task on the rerun: the rerun skips
    every finished task, Ray retries the killed one, and the result is the local engine's."""
    parts = write_parts(tmp_path / "parts", 30_000, seed=2)
    near_local(parts, tmp_path / "local", batch_size=500)  # batches of 500: shards of 4,000 rows, 8 of them
    run = tmp_path / "ray"
    proc = near_ray(parts, run, batch_size=500)
    deadline = time.monotonic() + 180
    while not list((run / "dedup" / "plan").glob("verify/*")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "01_dedup_near" / "_SUCCESS.json").exists()
    signed = {p.name: p.stat().st_mtime_ns for p in (run / "dedup" / "plan" / "sign").iterdir()}
    assert len(signed) == 8

    proc, killed = near_ray(parts, run, batch_size=500), []
    while proc.poll() is None and not killed:
        for worker in ray_plan_workers():
            worker.kill()
            killed.append(worker.pid)
            break
        time.sleep(0.02)
    assert proc.wait() == 0, proc.stderr.read()[-3000:]
    assert killed
    plan = json.loads((run / "dedup" / "plan.json").read_text())
    ran = {step["step"]: step["ran"] for step in plan["steps"]}
    assert ran["sign"] == 0 and ran["buckets"] == 0 and ran["attach"] == 0 and ran["labels"] > 0
    local, resumed = near_outcome(tmp_path / "local"), near_outcome(run)
    for key in local:
        assert local[key].equals(resumed[key]) if isinstance(local[key], pl.DataFrame) else \
            local[key] == resumed[key], key


def dedup_cmd(corpus: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["dedup", "--run-dir", str(run_dir), "--set", f"sources={corpus}",
            "--set", f"benchmarks=bench={corpus.parent / 'benchmark.jsonl'}", *extra]


def build_local(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "pipelines.build", *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def build_ray(tmp_path: Path, args: list[str]) -> subprocess.CompletedProcess:
    """`pipelines.build` with `--engine ray` on a local Ray instance limited to 2 CPUs and a 500 MB object store."""
    script = tmp_path / "ray_build.py"
    script.write_text(RAY_BUILD)
    proc = subprocess.run([sys.executable, str(script), *args, "--engine", "ray"], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def outcome(run_dir: Path) -> dict:
    report = json.loads((run_dir / "report.json").read_text())
    return {
        "export": pl.read_parquet(run_dir / "export" / "data" / "*.parquet"),
        "drops": {row["stage"]: row["dropped"] for row in report["stages"]},
        "rows": {row["stage"]: (row["rows_in"], row["rows_out"]) for row in report["stages"]},
        "counters": {row["stage"]: row["counters"] for row in report["stages"]},
        "near": {k: v for k, v in report["dedup"]["near"].items() if k != "index"},
        "decontamination": report["dedup"]["decontamination"],
        "clusters": pl.read_parquet(run_dir / "dedup" / "clusters.parquet"),
        "quarantine": pl.read_parquet(run_dir / "quarantine.parquet"),
    }


def test_a_killed_ray_run_resumes_and_an_index_is_shared(tmp_path):
    """The dedup recipe end to end: parts of a map stage written before a kill are kept, Ray workers write the rest
    and the run ends with the local engine's export, drops, counters, clusters and quarantine; near-dedup against a
    persistent index drops what the local engine drops."""
    corpus = tmp_path / "corpus.jsonl"
    planted = write_corpus(corpus, 6_000, seed=1)
    build_local(dedup_cmd(corpus, tmp_path / "local"))

    run = tmp_path / "ray"
    build_local(dedup_cmd(corpus, run))  # then as if killed in decontaminate: half its parts written, nothing after
    decontaminate = run / "02_decontaminate"
    (decontaminate / "_SUCCESS.json").unlink()
    parts = sorted(decontaminate.glob("part-*.parquet"))
    for part in parts[len(parts) // 2:]:
        part.unlink()
    for later in [d for d in run.iterdir() if d.is_dir() and d.name[:2].isdigit() and d.name[:2] > "02"]:
        shutil.rmtree(later)
    kept = {p.name: p.stat().st_mtime_ns for p in parts[: len(parts) // 2]}
    proc = build_ray(tmp_path, dedup_cmd(corpus, run))
    assert "02_decontaminate: resumed" in proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in parts[: len(parts) // 2]} == kept
    assert sorted(decontaminate.glob("part-*.parquet")) == parts
    local, resumed = outcome(tmp_path / "local"), outcome(run)
    assert local["export"].equals(resumed["export"])  # same ids, same messages, same order
    for key in ("drops", "rows", "counters", "near", "decontamination"):
        assert local[key] == resumed[key], key
    assert local["clusters"].equals(resumed["clusters"])
    assert local["quarantine"].sort("stage", "locator").equals(resumed["quarantine"].sort("stage", "locator"))
    drops = local["drops"]
    assert drops["03_dedup_near"]["near_duplicate"] >= planted["near"] * 0.7  # short copies fall below 0.8
    assert drops["01_dedup_exact"]["exact_duplicate"] >= planted["exact"]
    assert drops["02_decontaminate"]["contaminated"] >= 2
    assert sum(drops["00_ingest"].values()) == planted["bad"]
    assert local["counters"]["00_ingest"]["redacted_email"] > 0

    half = tmp_path / "half.jsonl"
    half.write_text("".join(corpus.read_text().splitlines(keepends=True)[:3000]))
    build_local(dedup_cmd(half, tmp_path / "seed", "--set", f"index={tmp_path / 'index-local'}"))
    shutil.copytree(tmp_path / "index-local", tmp_path / "index-ray")
    build_local(dedup_cmd(corpus, tmp_path / "local-index", "--set", f"index={tmp_path / 'index-local'}"))
    build_ray(tmp_path, dedup_cmd(corpus, tmp_path / "ray-index", "--set", f"index={tmp_path / 'index-ray'}"))
    local, distributed = outcome(tmp_path / "local-index"), outcome(tmp_path / "ray-index")
    assert local["near"]["indexed_before"] > 2000 and local["near"] == distributed["near"]
    assert local["export"].equals(distributed["export"]) and local["drops"] == distributed["drops"]
    reasons = pl.read_parquet(tmp_path / "ray-index" / "03_dedup_near" / "dropped.parquet")["drop_reason"]
    assert reasons.str.contains("(indexed)", literal=True).sum() > 1000


def test_batch_plan_cuts_the_batches_the_local_engine_cuts(tmp_path):
    start = 0
    for k, size in enumerate([3, 0, 700, 1, 256, 255, 1024, 9]):
        pl.DataFrame({"x": np.arange(start, start + size)}).write_parquet(tmp_path / f"part-{k:05d}.parquet")
        start += size
    for batch_size in (1, 7, 256, 1000, 5000):
        cache = {}
        planned = [read_batch(pieces, cache) for pieces in batch_plan(tmp_path, batch_size)]
        local = list(rebatch(read_parts(tmp_path), batch_size))
        assert len(planned) == len(local) and all(a.equals(b) for a, b in zip(planned, local)), batch_size


def test_candidates_verified_apart_give_the_pairs_of_the_local_sort():
    """The plan's bucket step (`candidate_pairs` on buckets sorted by row, no signatures) and its verify step
    (signatures compared where they are) find the pairs `similar_pairs` finds: a bucket past ALL_PAIRS_UP_TO, rows
    with no words (left out of the buckets, as the plan leaves them) and indexed rows (never paired together)."""
    rng = np.random.default_rng(5)
    words = [f"w{i}" for i in range(3000)]
    base = [" ".join(rng.choice(words, 80)) for _ in range(400)]
    template = " ".join(rng.choice(words, 200))
    texts = base + [t.replace(t.split()[3], "x", 1) for t in base[:100]] + \
        [template + " " + " ".join(rng.choice(words, 2)) for _ in range(150)] + ["", "?!"] * 5
    texts = [texts[i] for i in rng.permutation(len(texts))]
    params = MinHashParams()
    sigs, counts = signatures(texts, params)
    keys = band_keys(sigs, params.bands, params.rows)
    old = np.arange(len(texts)) < 200
    expected = similar_pairs(sigs, keys, 0.8, active=counts > 0, old=old)

    active = np.flatnonzero(counts > 0)
    band = np.tile(np.arange(params.bands), len(active))
    key, row = keys[active].ravel(), np.repeat(active, params.bands)
    order = np.lexsort((row, key, band))
    new_bucket = np.r_[True, (band[order][1:] != band[order][:-1]) | (key[order][1:] != key[order][:-1])]
    candidates = candidate_pairs(row[order], np.cumsum(new_bucket).astype(np.uint64), old[row[order]])
    candidates = np.unique(candidates, axis=0)
    agree = (sigs[candidates[:, 0]] == sigs[candidates[:, 1]]).sum(axis=1)
    got = candidates[agree >= min_equal(0.8, params.num_perm)]
    assert len(expected) > 150 and np.array_equal(got, expected)
    assert not (old[got[:, 0]] & old[got[:, 1]]).any()


def test_star_steps_find_the_components_scipy_finds():
    """Alternating large-star and small-star steps, run as the plan runs them (edges in both directions, each step
    on its own partitions of nodes), end in stars around each component's smallest node: `components`' labels."""
    rng = np.random.default_rng(3)
    n = 3000
    pairs = np.vstack([rng.integers(0, n, (1800, 2)), np.column_stack([np.arange(500, 699), np.arange(501, 700)])])
    pairs = np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1)  # random edges and a chain of 200 (many rounds)

    def both(a, b):
        edges = np.unique(np.column_stack([np.r_[a, b], np.r_[b, a]]), axis=0)
        return edges[:, 0], edges[:, 1]

    u, v = both(pairs[:, 0], pairs[:, 1])
    history = []
    for t in range(100):
        history.append(set(zip(u.tolist(), v.tolist())))
        if t >= 2 and t % 2 == 0 and history[t] == history[t - 2]:
            break
        step = large_star if t % 2 == 0 else small_star
        out = [step(u[u % 4 == k], v[u % 4 == k]) for k in range(4)]  # four partitions of nodes
        u, v = both(np.concatenate([a for a, _ in out]), np.concatenate([b for _, b in out]))
    labels = np.arange(n)
    np.minimum.at(labels, u, v)
    assert 4 < t < 100 and np.array_equal(labels, components(n, pairs))


@pytest.mark.parametrize("name", names())
def test_the_stages_ray_runs_can_be_shipped_to_workers(name):
    """Ray pickles a stage to send it to its workers (after one empty batch on the driver: `_run_map`)."""
    recipe = load_recipe(name)
    cfg = recipe.config()
    if hasattr(cfg, "sources"):
        cfg = apply_overrides(cfg, [f"sources={DATA / 'ingest' / 'chat_log.jsonl'}",
                                    f"benchmarks=math={DATA / 'dedup' / 'benchmark.jsonl'}"][:1 + (name == "dedup")])
    assert pickle.loads(pickle.dumps(cfg)) == cfg  # workers get the resolved config in their Context
    engine = RayEngine()
    shipped = [stage for stage in recipe.stages(cfg) if engine.takes(stage)]
    assert shipped or name == "ingest"
    for stage in shipped:
        copy = pickle.loads(pickle.dumps(stage))
        assert type(copy) is type(stage) and copy.settings() == stage.settings()
    assert not any(stage.group_by for stage in shipped)  # a grouped stage's batches are not the plan's batches
