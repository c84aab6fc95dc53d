"""What the SFT and DPO commands share: find a split, resolve the model, build TRL's config, train, report, save.

TRL, peft, torch and datasets are imported inside the functions, so the CLI starts fast and a missing `[train]`
extra is a `ConfigError` naming the install command, not a traceback. Runs on CPU unless CUDA is available;
`--bf16` is mixed precision on either (fp32 master weights, matmuls in bfloat16: 1.5-2.2x fp32's tokens/s through
the trainers on this CPU with AVX-512 BF16, bench/train.py).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from pipelines.core.errors import ConfigError, SchemaError, SourceError
from pipelines.train.options import TrainOptions

INSTALL_HINT = "pip install -e '.[train]'"
LENGTH = "length"  # the column `group_by_length` batches by (DPO adds it; SFT's sampler reads `input_ids`)


def find_split(export_dir: Path, split: str) -> list[Path]:
    """Return the split's Parquet shards under `export_dir/data`, or raise `SourceError`."""
    if not export_dir.is_dir():
        raise SourceError(f"export directory {export_dir} does not exist; run the export first or fix the path")
    files = sorted((export_dir / "data").glob(f"{split}-*.parquet"))
    if not files:
        raise SourceError(f"no {split} split in {export_dir} (expected data/{split}-*.parquet); re-run the export")
    return files


def load_split(files: list[Path], columns: list[str]):
    """The shards as one `datasets.Dataset` reduced to `columns`, or `SchemaError` naming the missing ones."""
    from datasets import load_dataset

    dataset = load_dataset("parquet", data_files={"train": [str(f) for f in files]})["train"]
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise SchemaError(f"{files[0].name} has no {', '.join(map(repr, missing))} column; re-run the export")
    return dataset.select_columns(columns)


def import_trl(opts: TrainOptions):
    """`trl`, after checking that accelerate (and peft with --lora) import; else `ConfigError` with the fix."""
    try:
        import accelerate  # noqa: F401  (Trainer needs it; imported here to name the fix)
        import trl

        if opts.lora:
            import peft  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"training needs the optional '{exc.name}' package; install it with {INSTALL_HINT}") from exc
    import torch

    from pipelines.train.cpu_head import install

    install()  # CPU tensors only; CUDA keeps TRL's own head
    if not torch.cuda.is_available():
        reuse_freed_memory()
    return trl


def reuse_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for the next allocation instead of handing it back to the kernel.

    By default every block over 32 MB (activations, the LM head's logits) is a fresh `mmap`, and its first write
    faults in each 4 KB page: 45 of the 55 ms an elementwise pass over a 200 MB tensor took here. Training frees and
    allocates the same sizes every step, so keeping them gives SFT on a CPU 1.1-1.3x its tokens/s and DPO about
    1.0x (bench/train.py), for 3-4% more peak memory, which stays the process's until it exits. False where the C
    library is not glibc.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def resolve_model(opts: TrainOptions, log) -> str:
    """`--model` if it is a directory, else the embedded checkpoint (converted on first use)."""
    if opts.model is None:
        from pipelines.teacher.weights import ensure_checkpoint

        return str(ensure_checkpoint(log=log))
    if not Path(opts.model).is_dir():
        raise ConfigError(f"model checkpoint directory {opts.model} does not exist; pass --model PATH to a "
                          "transformers checkpoint (a directory with config.json)")
    return str(opts.model)


def config_kwargs(opts: TrainOptions, output_dir: Path) -> dict:
    """The `TrainingArguments` both trainers take from our options."""
    import torch

    return {
        "output_dir": str(output_dir),
        "learning_rate": opts.learning_rate,
        "max_length": opts.max_length,
        "num_train_epochs": opts.epochs,
        "max_steps": opts.max_steps or -1,
        "per_device_train_batch_size": opts.batch_size,
        "per_device_eval_batch_size": opts.batch_size,
        "gradient_accumulation_steps": opts.gradient_accumulation,
        "bf16": opts.bf16,  # TRL defaults it on; off unless asked (on a CPU: torch.autocast to bfloat16)
        "use_cpu": not torch.cuda.is_available(),
        "seed": opts.seed,
        # batches of similar lengths: 0.90 of a batch is tokens, not padding, against 0.62 in random order (hh-rlhf)
        "train_sampling_strategy": "group_by_length" if opts.group_by_length else "random",
        "length_column_name": LENGTH,
        "report_to": [],
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_steps": 1,
        "dataloader_pin_memory": False,
        "activation_checkpointing": False,  # TRL defaults it on; a small model does not need it
    }


def lora_config(opts: TrainOptions):
    """A `peft.LoraConfig` from the options, or None without --lora."""
    if not opts.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=opts.lora_r, lora_alpha=opts.lora_alpha, lora_dropout=opts.lora_dropout,
                      target_modules=opts.target_modules(), task_type="CAUSAL_LM")


def train(trainer, opts: TrainOptions, output_dir: Path, *, model: str, examples: int, prepared: float, log) -> dict:
    """Run `trainer.train()`; write and return `train_metrics.json` (the model is saved by `save`).

    Tokens are TRL's `num_tokens`: the non-padding tokens of every sequence the policy was trained on. `prepared`:
    the seconds the trainer took to build (tokenizing; for DPO, the reference log-probs of both splits too).
    """
    import torch

    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start

    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    tokens = int(max((h["num_tokens"] for h in history if "num_tokens" in h), default=0))
    device = str(trainer.args.device)
    if trainer.args.device.type == "cuda":
        device += f" ({torch.cuda.get_device_name(trainer.args.device)})"
    metrics = {
        "command": opts.command,
        "model": model,
        "export": str(Path(opts.export_dir).resolve()),  # lineage: what it was trained on (pipelines.eval reads it)
        "examples": examples,
        "steps": int(result.global_step),
        "loss": float(losses[-1]) if losses else math.nan,
        "mean_loss": float(result.training_loss),
        "seconds": round(seconds, 2),
        "prepare_seconds": round(prepared, 2),
        "tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else 0.0,
        "device": device,
        "bf16": opts.bf16,
        "lora": {"r": opts.lora_r, "alpha": opts.lora_alpha, "dropout": opts.lora_dropout,
                 "target_modules": opts.target_modules()} if opts.lora else False,
    }
    write_json(output_dir / "train_metrics.json", metrics)
    log(f"loss {metrics['loss']:.4f} (mean {metrics['mean_loss']:.4f}) after {metrics['steps']} steps, "
        f"{seconds:.1f} s, {metrics['tokens_per_second']:.0f} tokens/s on {device}")
    return metrics


def save(trainer, output_dir: Path, *, lora: bool) -> None:
    """Save model and tokenizer to `output_dir`; with LoRA, the adapter to `output_dir/adapter` and the merged model
    to `output_dir`, so that `--model output_dir` works for the next command as any checkpoint does; then the model
    card (`pipelines.train.card`)."""
    from pipelines.train.card import write_card

    trainer.accelerator.unwrap_model(trainer.model).config.use_cache = True  # Trainer turns it off for training
    if not lora:
        trainer.save_model(str(output_dir))
    else:
        trainer.save_model(str(output_dir / "adapter"))
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        merged.save_pretrained(str(output_dir))
        trainer.processing_class.save_pretrained(str(output_dir))
    write_card(output_dir)  # after the trainer's own README.md


def write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")
