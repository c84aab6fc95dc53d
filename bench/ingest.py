"""Ingest benchmark: our ingest + validate against `datasets.load_dataset("json")` + `map` to messages.

    python bench/ingest.py [--rows 200000] [--sizes 50000,400000] [--repeat 3] [--work DIR]

Builds a ShareGPT JSONL of `--rows` conversations (and its .gz) from the real files in ../shared/data/real
(ShareGPT, Alpaca, AlpacaEval, GSM8K, Self-Instruct seeds and hh-rlhf dialogues, drawn at random with an id each),
plus one of each of `--sizes` to show whether peak memory grows with the file. Each path runs `--repeat` times, each in a
fresh process with an empty scratch dir, alternating with the others; the table shows the fastest run (this machine
is shared and noisy) and the highest peak memory (max RSS, worker processes included), with our speed-up.

- ours: the ingest recipe's `Ingest` stage run by the `Runner` (parse, convert, JSON Schema check, id, quarantine
  columns, Parquet checkpoint parts).
- datasets: `load_dataset("json", data_files=...)` into a fresh cache dir, then `.map` that turns
  `conversations` into `messages` (one row at a time, as most scripts write it); also the same map with
  `num_proc=2`, since ours uses both cores too.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def real_conversations() -> list[list[dict]]:
    def pair(user: str, answer: str) -> list[dict]:
        return [{"from": "human", "value": user}, {"from": "gpt", "value": answer}]

    convs = [r["conversations"] for r in json.loads((REAL / "sharegpt_dummy_conversation.json").read_text())]
    for name in ("gpteacher_roleplay_alpaca_format.json", "alpaca_eval_example_outputs.json"):
        for r in json.loads((REAL / name).read_text()):
            convs.append(pair(f"{r['instruction']}\n\n{r.get('input', '')}".strip(), r["output"]))
    for line in (REAL / "gsm8k_test.jsonl").read_text().splitlines():
        r = json.loads(line)
        convs.append(pair(r["question"], r["answer"]))
    for line in (REAL / "self_instruct_seed_tasks.jsonl").read_text().splitlines():
        r = json.loads(line)
        for inst in r["instances"]:
            convs.append(pair(f"{r['instruction']}\n\n{inst['input']}".strip(), inst["output"]))
    with gzip.open(REAL / "hh_rlhf_harmless_base_test.jsonl.gz", "rt") as f:
        for line in f:
            text = json.loads(line)["chosen"]
            turns = [t.split(":", 1) for t in text.split("\n\n")[1:] if ":" in t]
            convs.append([{"from": "human" if s == "Human" else "gpt", "value": v.strip()} for s, v in turns])
    return convs


def build_file(path: Path, rows: int, seed: int = 0) -> None:
    convs = real_conversations()
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(rows):
            f.write(json.dumps({"id": f"bench_{i}", "conversations": convs[rng.randrange(len(convs))]}) + "\n")


OURS = """
import json, resource, sys, time
from pathlib import Path
from pipelines.core.runner import Runner
from pipelines.core.stage import Context
from pipelines.stages.ingest import Ingest
path, run_dir = sys.argv[1], Path(sys.argv[2])
start = time.perf_counter()
rows = Runner([Ingest(sources=(path,))], Context(run_dir=run_dir, config=None)).run()
seconds = time.perf_counter() - start
peak = max(resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
print(json.dumps({"rows": rows[0]["rows_out"], "dropped": sum(rows[0]["dropped"].values()), "seconds": seconds,
                  "peak_mb": peak / 1024}))
"""

DATASETS = """
import json, os, resource, sys, time
import datasets
datasets.disable_progress_bars()
path, cache, num_proc = sys.argv[1], sys.argv[2], int(sys.argv[3]) or None
ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
def to_messages(row):
    return {"messages": [{"role": ROLES[t["from"]], "content": t["value"]} for t in row["conversations"]]}
start = time.perf_counter()
ds = datasets.load_dataset("json", data_files=path, split="train", cache_dir=cache)
ds = ds.map(to_messages, remove_columns=["conversations"], num_proc=num_proc)
seconds = time.perf_counter() - start
peak = max(resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
print(json.dumps({"rows": len(ds), "dropped": 0, "seconds": seconds, "peak_mb": peak / 1024}))
"""


def measure(code: str, path: Path, scratch: Path, *args: str) -> dict:
    """Run one path in a fresh process with an empty scratch dir (no checkpoint or cache from an earlier run)."""
    shutil.rmtree(scratch, ignore_errors=True)
    args = (str(path), str(scratch), *args)
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--sizes", default="50000,400000", help="other file sizes (rows), comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="where to write the files (default: a temp dir)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    files = []
    sizes = sorted({args.rows, *(int(n) for n in args.sizes.split(",") if n)})
    for rows in sizes:
        path = work / f"sharegpt_{rows}.jsonl"
        if not path.exists():
            build_file(path, rows)
        files.append(path)
        if rows == args.rows:
            gz = path.with_suffix(".jsonl.gz")
            if not gz.exists():
                with open(path, "rb") as src, gzip.open(gz, "wb", compresslevel=6) as dst:
                    shutil.copyfileobj(src, dst)
            files.append(gz)

    results = []
    for path in files:
        tag = path.name
        paths = {"ours": (OURS,), "datasets": (DATASETS, "0"), "datasets num_proc=2": (DATASETS, "2")}
        runs = {name: [] for name in paths}
        for _ in range(args.repeat):
            for name, (code, *extra) in paths.items():
                runs[name].append(measure(code, path, work / "scratch", *extra))
        best = {name: {**min(r, key=lambda x: x["seconds"]), "peak_mb": max(x["peak_mb"] for x in r)}
                for name, r in runs.items()}
        ours = best.pop("ours")
        results.append((tag, path.stat().st_size, ours, best))

    header = (f"{'file':<26}{'MB':>7}  {'path':<22}{'rows':>8}{'rows/s':>10}{'peak MB':>9}"
              f"{'ours x faster':>15}{'peak ratio':>12}")
    print(header)
    print("-" * len(header))
    for tag, size, ours, peers in results:
        for name, r in (("ours", ours), *peers.items()):
            rate = r["rows"] / r["seconds"]
            speed = "" if name == "ours" else f"{r['seconds'] / ours['seconds']:.2f}x"
            memory = "" if name == "ours" else f"{ours['peak_mb'] / r['peak_mb']:.2f}"
            print(f"{tag:<26}{size / 1e6:>7.0f}  {name:<22}{r['rows']:>8}{rate:>10.0f}{r['peak_mb']:>9.0f}"
                  f"{speed:>15}{memory:>12}")
    print(f"\nfiles and runs under {work}")


if __name__ == "__main__":
    main()
