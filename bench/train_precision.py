"""Does `--bf16` hold the model's quality? SFT of SmolLM2-135M in fp32 and in bf16 (autocast, this CPU's fast
path), same rows, steps and seeds, then every model's held-out loss on the same rows.

    python bench/train_precision.py [--steps 40] [--seeds 3] [--rows 600]

The data: hh-rlhf conversations from ../shared/data, read into an export by the ingest recipe as preference pairs,
whose chosen sides make train_sft and the held-out test_sft. Held-out loss: each test conversation's mean token
NLL, on the chat template's text as SFT trains on it, computed in fp32 for every model so that it measures the
trained weights, not the inference precision.
The table gives each precision's mean over seeds and the paired difference bf16 - fp32 per seed with its 95%
bootstrap CI over conversations (`pipelines.eval.stats.paired_ci`); bf16 holds where the CI includes 0 or is below
the seed-to-seed spread of fp32 itself.
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from train import hh_export  # noqa: E402


def held_out_nll(model_dir: str, conversations: list[list[dict]]) -> list[float]:
    """Each conversation's mean token NLL under the model, in fp32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    losses = []
    with torch.no_grad():
        for messages in conversations:
            ids = tokenizer.apply_chat_template(messages, tokenize=True, return_tensors="pt", return_dict=True)
            ids = ids["input_ids"][:, :512]
            losses.append(float(model(input_ids=ids, labels=ids).loss))
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=600)
    args = parser.parse_args()
    from pipelines.eval.stats import paired_ci
    from pipelines.teacher.weights import checkpoint_dir
    from pipelines.train.common import find_split, load_split
    from pipelines.train.options import SFTOptions
    from pipelines.train.sft import train_sft

    work = Path(tempfile.mkdtemp(prefix="bench-precision-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # a saved model is 0.5-1 GB
    export = hh_export(work, args.rows)
    test = load_split(find_split(export, "test_sft"), ["messages"])["messages"]
    base = held_out_nll(str(checkpoint_dir()), test)
    losses, speeds = {}, {}
    for precision in ("fp32", "bf16"):
        for seed in range(args.seeds):
            out = work / f"{precision}-{seed}"
            start = time.perf_counter()
            metrics = train_sft(SFTOptions(str(export), max_steps=args.steps, batch_size=4, max_length=512,
                                           learning_rate=5e-5, bf16=precision == "bf16", seed=seed,
                                           output_dir=str(out)), log=lambda *_: None)
            speeds[precision, seed] = metrics["tokens_per_second"]
            losses[precision, seed] = held_out_nll(str(out), test)
            shutil.rmtree(out)
            print(f"{precision} seed {seed}: {time.perf_counter() - start:.0f} s, "
                  f"{metrics['tokens_per_second']:.0f} tokens/s", file=sys.stderr)
    mean = statistics.fmean
    print(f"SmolLM2-135M, full SFT, {args.steps} steps x batch 4, {len(test)} held-out conversations; base model's "
          f"held-out loss {mean(base):.4f}\n")
    print("| precision | seed | tokens/s | held-out loss | vs base | bf16 - fp32 (paired 95% CI) |")
    print("|---|---|---|---|---|---|")
    for (precision, seed), values in losses.items():
        diff = "{:+.4f} ({:+.4f} to {:+.4f})".format(*paired_ci(values, losses["fp32", seed])) \
            if precision == "bf16" else ""
        print(f"| {precision} | {seed} | {speeds[precision, seed]:.0f} | {mean(values):.4f} | "
              f"{mean(values) - mean(base):+.4f} | {diff} |")
    for precision in ("fp32", "bf16"):
        per_seed = [mean(losses[precision, seed]) for seed in range(args.seeds)]
        spread = statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0
        print(f"\n{precision}: mean held-out loss {mean(per_seed):.4f}, seed-to-seed sd {spread:.4f}", end="")
    print()


if __name__ == "__main__":
    main()
