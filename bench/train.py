"""Training speed against the machine's bound: tokens/s of `pipelines.train` SFT and DPO, full and LoRA, on
SmolLM2-135M, beside what this CPU's matmul rate allows.

    python bench/train.py [--steps 10] [--precision fp32,bf16] [--compare-head] [--compare-malloc]

tokens/s: the tokens trained on over the trainer's whole time, building included (tokenizing, and DPO's reference
log-probs, computed once for every pair before training); loop tokens/s: over the training loop alone.
`--compare-head` runs every setting with TRL's own fused LM head too, before `pipelines.train.cpu_head`;
`--compare-malloc` with glibc's default allocator too, before `pipelines.train.common.reuse_freed_memory`. Each
setting trains in a process of its own.

The bound: torch's fp32 and bf16 matmul rates here (1024x1024, measured first) divided by the FLOPs a trained
token costs: 6N for a full fine-tune (forward 2N, backward 4N), 4N with LoRA (no weight gradients of the frozen
base), plus 2N per token for DPO's reference forward. N = the model's parameters. The data: hh-rlhf pairs from
../shared/data read into an export by the ingest recipe (train_sft and train_prefs).
"""

from __future__ import annotations

import argparse
import atexit
import itertools
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCH = 4
WEIGHTS = {"full": 0.0, "LoRA": 0.05, "LoRA, dropout 0": 0.0}  # LoRA's dropout: the option's default, and none
HH = ROOT.parent / "shared" / "data" / "real" / "hh_rlhf_harmless_base_test.jsonl.gz"


def matmul_gflops(dtype, size: int = 1024, seconds: float = 2.0) -> float:
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        done += 1
    return 2 * size**3 * done / (time.perf_counter() - start) / 1e9


def hh_export(work: Path, rows: int) -> Path:
    """The first `rows` hh-rlhf pairs read into an export by the ingest recipe (train_sft and train_prefs, and a
    tenth held out as test_sft and test_prefs); returns the export dir."""
    subprocess.run([sys.executable, "-m", "pipelines.build", "ingest", "--run-dir", str(work / "run"), "--set",
                    "kind=preference", "--set", f"sources={HH}?max_rows={rows}&license=mit"], cwd=ROOT, check=True,
                   capture_output=True)
    return work / "run" / "export"


def train_one(spec: dict) -> dict:
    """One setting, in this process (`--one`): the trainer's metrics, with TRL's head or glibc's default allocator
    where the spec says so."""
    from pipelines.train import common, cpu_head
    from pipelines.train.dpo import train_dpo
    from pipelines.train.options import DPOOptions, SFTOptions
    from pipelines.train.sft import train_sft

    if spec["head"] == "TRL's":
        cpu_head.install = lambda: False
    if spec["malloc"] == "default":
        common.reuse_freed_memory = lambda: False
    options = (SFTOptions if spec["command"] == "sft" else DPOOptions)(
        spec["export"], max_steps=spec["steps"], batch_size=BATCH, max_length=512, lora=spec["kind"] != "full",
        bf16=spec["bf16"], lora_dropout=WEIGHTS[spec["kind"]], output_dir=spec["output_dir"])
    metrics = (train_sft if spec["command"] == "sft" else train_dpo)(options, log=lambda *_: None)
    shutil.rmtree(options.output_dir)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rows", type=int, default=0, help="hh-rlhf rows read (default: enough that DPO trains "
                                                                 "one epoch of --steps batches, as its reference "
                                                                 "log-probs are computed for every pair once)")
    parser.add_argument("--precision", default="fp32,bf16", help="fp32, bf16 (autocast) or both")
    parser.add_argument("--compare-head", action="store_true", help="also run every setting with TRL's own LM "
                                                                    "head (the 'before' of pipelines.train.cpu_head)")
    parser.add_argument("--compare-malloc", action="store_true", help="also run every setting with glibc's default "
                                                                      "allocator (before reuse_freed_memory)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a setting's JSON: train it here, print its metrics
    args = parser.parse_args()
    if args.one:
        print(json.dumps(train_one(json.loads(args.one))))
        return
    if not set(precisions := [p.strip() for p in args.precision.split(",")]) <= {"fp32", "bf16"}:
        parser.error(f"--precision {args.precision}: fp32, bf16 or both")
    args.precision = [p == "bf16" for p in precisions]
    args.rows = args.rows or math.ceil(args.steps * BATCH / 0.9)  # the ingest recipe keeps 10% for test_prefs
    from pipelines.teacher.weights import checkpoint_dir

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # a saved model is 0.5-1 GB
    export = hh_export(work, args.rows)
    from transformers import AutoModelForCausalLM

    params = AutoModelForCausalLM.from_pretrained(checkpoint_dir()).num_parameters()
    rates = {"fp32": matmul_gflops(__import__("torch").float32), "bf16": matmul_gflops(__import__("torch").bfloat16)}
    rows = []
    variants = [("TRL's", "default")] * args.compare_head + [("ours", "default")] * args.compare_malloc
    for command, kind, bf16, (head, malloc) in itertools.product(("sft", "dpo"), WEIGHTS, args.precision,
                                                                 [*variants, ("ours", "reused")]):
        spec = {"head": head, "malloc": malloc, "command": command, "kind": kind, "bf16": bf16, "steps": args.steps,
                "export": str(export), "output_dir": str(work / f"run-{len(rows)}")}
        # each setting in a process of its own: neither speed-up can be undone in a process, and no run inherits
        # another's heap
        child = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], cwd=ROOT, check=True,
                               capture_output=True, text=True)
        metrics = json.loads(child.stdout.splitlines()[-1])
        lora = kind != "full"
        flops = (4 if lora else 6) * params + (2 * params if command == "dpo" else 0)
        bound = {k: rate * 1e9 / flops for k, rate in rates.items()}
        loop = metrics["tokens"] / metrics["seconds"]
        speed = metrics["tokens"] / (metrics["seconds"] + metrics["prepare_seconds"])
        rows.append((head, malloc, command, kind, "bf16" if bf16 else "fp32", loop, speed, bound["fp32"],
                     bound["bf16"]))
    print(f"matmul here: fp32 {rates['fp32']:.0f} GFLOP/s, bf16 {rates['bf16']:.0f} GFLOP/s")
    print("| LM head | malloc | train | weights | precision | loop tokens/s | tokens/s | fp32 bound | share | "
          "bf16 bound | share |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for head, malloc, command, kind, precision, loop, speed, fp32, bf16 in rows:
        print(f"| {head} | {malloc} | {command} | {kind} | {precision} | {loop:.0f} | {speed:.0f} | {fp32:.0f} | "
              f"{speed / fp32:.2f} | {bf16:.0f} | {speed / bf16:.2f} |")


if __name__ == "__main__":
    main()
