"""Supervised fine-tuning on an export's `train_sft` split with TRL's `SFTTrainer`.

Design: a thin, CPU-first wrapper. The export's Parquet shards are loaded with `datasets` and reduced to the
`messages` column, which TRL consumes as a conversational dataset and renders with the model's chat template
(the `prompt` column must go: TRL would take it for the prompt-completion format). The default model is the
embedded SmolLM2-135M checkpoint from `pipelines.server`. TRL, transformers and datasets are imported inside
`train_sft`, so the CLI starts fast and reports a missing `[train]` extra as a `ConfigError`, not a traceback.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from pipelines.errors import ConfigError, SourceError

INSTALL_HINT = "pip install -e '.[train]'"


def find_split(export_dir: Path, split: str = "train_sft") -> list[Path]:
    """Return the split's Parquet shards under `export_dir/data`, or raise `SourceError`."""
    if not export_dir.is_dir():
        raise SourceError(f"export directory {export_dir} does not exist; run the export first or fix the path")
    files = sorted((export_dir / "data").glob(f"{split}-*.parquet"))
    if not files:
        raise SourceError(f"no {split} split in {export_dir} (expected data/{split}-*.parquet); re-run the export")
    return files


def _import_trl():
    try:
        import accelerate  # noqa: F401  (Trainer needs it; import here to name the fix)
        import trl
    except ImportError as exc:
        raise ConfigError(f"training needs the optional '{exc.name}' package; install it with {INSTALL_HINT}") from exc
    return trl


def train_sft(
    export_dir,
    *,
    model=None,
    output_dir=None,
    max_steps: int = 10,
    batch_size: int = 2,
    learning_rate: float = 5e-5,
    max_length: int = 512,
    log=print,
) -> dict:
    """Fine-tune `model` (default: the embedded checkpoint) on `train_sft` and save it to `output_dir`.

    Returns {"output_dir", "steps", "train_loss" (mean over steps), "last_loss", "seconds"}.
    """
    export_dir = Path(export_dir).resolve()
    files = find_split(export_dir)
    if max_steps < 1 or batch_size < 1 or max_length < 8 or not learning_rate > 0:
        raise ConfigError("--max-steps and --batch-size must be >= 1, --max-length >= 8 and --learning-rate > 0")
    trl = _import_trl()
    if model is None:
        from pipelines.server import ensure_checkpoint

        model = ensure_checkpoint(log=log)
    elif not Path(model).is_dir():
        raise ConfigError(f"model checkpoint directory {model} does not exist; pass --model PATH to a transformers checkpoint")
    output_dir = Path(output_dir) if output_dir else export_dir.parent / "sft-model"

    from datasets import load_dataset

    dataset = load_dataset("parquet", data_files={"train": [str(f) for f in files]})["train"]
    if "messages" not in dataset.column_names:
        raise SourceError(f"{files[0].name} has no 'messages' column; re-run the export")
    dataset = dataset.select_columns(["messages"])

    config = trl.SFTConfig(
        output_dir=str(output_dir),
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        max_length=max_length,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        logging_steps=1,
        dataloader_pin_memory=False,
        activation_checkpointing=False,  # TRL defaults it on; needless on CPU, and the old name warns
    )
    log(f"training {Path(str(model)).name} on {len(dataset)} conversations for {max_steps} steps (CPU)")
    start = time.perf_counter()
    trainer = trl.SFTTrainer(model=str(model), args=config, train_dataset=dataset)
    result = trainer.train()
    trainer.save_model(str(output_dir))
    seconds = time.perf_counter() - start

    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    last_loss = float(losses[-1]) if losses else math.nan
    train_loss = float(result.training_loss)
    log(f"final training loss {last_loss:.4f} (mean {train_loss:.4f} over {result.global_step} steps, {seconds:.1f} s)")
    log(f"saved model and tokenizer to {output_dir}")
    return {
        "output_dir": str(output_dir),
        "steps": int(result.global_step),
        "train_loss": train_loss,
        "last_loss": last_loss,
        "seconds": round(seconds, 1),
    }
