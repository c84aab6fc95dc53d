"""Does the exported GGUF decode like the checkpoint it came from? Greedy decoding of a transformers checkpoint and of
its `pipelines.train export` GGUF files on the embedded engine (llama-server), on the same prompt tokens.

    python bench/gguf_agreement.py [--model-dir DIR] [--quants f16,q8_0,q4_k_m] [--prompts 20] [--tokens 32]

DIR defaults to a copy of the embedded SmolLM2-135M-Instruct checkpoint. Each prompt (the shipped feedback prompts,
then the seed tasks) goes through the chat template once; transformers' `generate` (greedy) and llama-server's
`/completion` (temperature 0, the same token ids as the prompt) each decode `--tokens` tokens. Per GGUF type the
table gives the share of prompts whose first N tokens are identical, and the mean share of tokens decoded before the
first difference; and, where they part, how close a call it was: transformers' logits along the GGUF's path, the
GGUF's token's rank there and its logit gap to transformers' choice (a gap of a few hundredths is a near tie that
any change of arithmetic may flip; a large one would be a broken conversion). Targets: f16 >= 0.95, q8_0 >= 0.90
identical.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.teacher.server import EmbeddedConfig, EmbeddedServer  # noqa: E402
from pipelines.teacher.weights import ensure_checkpoint  # noqa: E402
from pipelines.train.export import export_gguf  # noqa: E402


def prompts(n: int) -> list[str]:
    data = resources.files("pipelines.data")
    found = []
    for name in ("feedback_prompts.jsonl", "seed_tasks.jsonl"):
        for line in data.joinpath(name).read_text().splitlines():
            row = json.loads(line)
            text = row.get("text") or row.get("instruction") or row.get("prompt") or ""
            if text.strip():
                found.append(text + (f"\n\n{row['input']}" if row.get("input") else ""))
    return found[:n]


def hf_greedy(model_dir: Path, inputs: list[list[int]], tokens: int) -> list[list[int]]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for ids in inputs:
            generated = model.generate(torch.tensor([ids]), max_new_tokens=tokens, do_sample=False)
            out.append(generated[0, len(ids):].tolist())
    return out


def gguf_greedy(gguf: Path, inputs: list[list[int]], tokens: int) -> list[list[int]]:
    server = EmbeddedServer(gguf.with_suffix(".log"), log=lambda m: None,
                            config=EmbeddedConfig(model=str(gguf), engine="llama", slots=1)).start()
    root = server.base_url.rsplit("/v1", 1)[0]
    out = []
    try:
        for ids in inputs:
            body = {"prompt": ids, "n_predict": tokens, "temperature": 0, "top_k": 1, "cache_prompt": False,
                    "return_tokens": True, "seed": 0}
            request = urllib.request.Request(root + "/completion", json.dumps(body).encode(),
                                             {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=300) as r:
                answer = json.loads(r.read())
            out.append(answer.get("tokens") or [])
    finally:
        server.stop()
    return out


def partings(model_dir: Path, inputs: list[list[int]], decoded: list[list[int]], eos: set[int],
             tokens: int) -> list[tuple[int, float]]:
    """Where the GGUF's greedy path first leaves transformers' choice: (the GGUF token's rank, its logit gap)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    found = []
    for ids, path in zip(inputs, decoded):
        path = [t for t in path if t not in eos][:tokens]
        if not path:
            continue
        with torch.no_grad():
            logits = model(torch.tensor([ids + path])).logits[0, len(ids) - 1:]
        for k, token in enumerate(path):
            row = logits[k]
            if int(row.argmax()) != token:
                found.append((int((row > row[token]).sum()) + 1, float(row.max() - row[token])))
                break
    return found


def agreement(a: list[list[int]], b: list[list[int]], tokens: int, eos: set[int]) -> tuple[float, float]:
    """(share of prompts whose first `tokens` tokens are identical, mean share of tokens before the first difference);
    an end-of-sequence token is not counted (transformers returns it, llama-server does not)."""
    same, prefix = 0, []
    for x, y in zip(a, b):
        x, y = [t for t in x if t not in eos][:tokens], [t for t in y if t not in eos][:tokens]
        k = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
        same += x == y
        prefix.append(k / max(1, max(len(x), len(y))))
    return same / len(a), sum(prefix) / len(prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--quants", default="f16,q8_0,q4_k_m")
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    work = Path(tempfile.mkdtemp(prefix="bench-gguf-"))
    model_dir = args.model_dir
    if model_dir is None:
        model_dir = work / "checkpoint"
        shutil.copytree(ensure_checkpoint(), model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    inputs = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                            tokenize=True, return_dict=False) for p in prompts(args.prompts)]
    inputs = [list(ids["input_ids"]) if isinstance(ids, dict) else list(ids) for ids in inputs]
    started = time.perf_counter()
    reference = hf_greedy(model_dir, inputs, args.tokens)
    print(f"transformers greedy on {len(inputs)} prompts: {time.perf_counter() - started:.1f} s")
    eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    print(f"\n| GGUF | MB | prompts with the first {args.tokens} tokens identical | mean share before the first "
          f"difference | where they part: GGUF token's rank in transformers (worst) | logit gap (median, max) | "
          f"seconds |")
    print("|---|---|---|---|---|---|---|")
    for quant in args.quants.split(","):
        started = time.perf_counter()
        gguf = export_gguf(model_dir, quant, log=lambda m: None)
        decoded = gguf_greedy(gguf, inputs, args.tokens)
        same, prefix = agreement(reference, decoded, args.tokens, eos)
        parted = partings(model_dir, inputs, decoded, eos, args.tokens)
        gaps = sorted(g for _, g in parted)
        where = (f"{max(r for r, _ in parted)} | {gaps[len(gaps) // 2]:.3f}, {gaps[-1]:.3f}" if parted
                 else "- | -")
        print(f"| {quant} | {gguf.stat().st_size / 1e6:,.1f} | {same:.2f} | {prefix:.3f} | {where} | "
              f"{time.perf_counter() - started:.1f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
