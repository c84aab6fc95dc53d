"""Training options: one dataclass per command, sharing `TrainOptions`; the CLI is generated from their fields.

Each field becomes a flag (`pipelines.cli.add_option_flags`: `learning_rate` -> `--learning-rate`, a bool -> a
switch) whose help is the field's `metadata["help"]` and allowed range, as in TRL's config classes; the ranges are
checked as a recipe's settings are (`pipelines.core.config.validate`). `export_dir` is the positional argument.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields

from pipelines.cli import option_flag
from pipelines.core.config import validate


@dataclass
class TrainOptions:
    export_dir: str = field(metadata={"help": "directory written by the export stage (holds data/<split>-*.parquet)"})
    model: str | None = field(default=None, metadata={
        "help": "transformers checkpoint dir to start from (default: the embedded SmolLM2-135M)", "metavar": "PATH"})
    output_dir: str | None = field(default=None, metadata={
        "help": "where to save the model and metrics (default: EXPORT_DIR/../<command>-model)", "metavar": "DIR"})
    learning_rate: float = field(default=5e-5, metadata={"help": "peak learning rate (AdamW, linear decay)", "range": "(0, 1]"})
    max_length: int = field(default=1024, metadata={"help": "max tokens per sequence; longer ones are truncated", "range": "[8, 1048576]"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the training split", "range": "(0, 1000]"})
    max_steps: int = field(default=0, metadata={
        "help": "stop after N optimizer steps, overriding --epochs; 0 trains for --epochs",
        "range": "[0, inf)"})
    batch_size: int = field(default=2, metadata={"help": "examples per device and forward pass", "range": "[1, 65536]"})
    gradient_accumulation: int = field(default=1, metadata={"help": "forward passes per optimizer step", "range": "[1, 65536]"})
    lora: bool = field(default=False, metadata={"help": "train a LoRA adapter (peft) instead of all weights"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank", "range": "[1, 4096]"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)", "range": "[1, 65536]"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input", "range": "[0, 1)"})
    lora_target_modules: str = field(default="all-linear", metadata={
        "help": "comma-separated module names to adapt, e.g. q_proj,v_proj, or all-linear"})
    bf16: bool = field(default=False, metadata={
        "help": "bfloat16 mixed precision, on a GPU or a CPU (fast where the CPU has AVX-512 BF16 or AMX)"})
    group_by_length: bool = field(default=True, metadata={
        "help": "batch examples of similar length, so little of a batch is padding (--no-group-by-length: random)"})
    seed: int = field(default=42, metadata={"help": "random seed (data order, LoRA init)", "range": "[0, 4294967295]"})

    command = "train"

    def validate(self) -> None:
        """Raise `ConfigError` naming the first option outside its range (the ranges are in the fields)."""
        validate(self, flag=option_flag)

    def target_modules(self) -> str | list[str]:
        """`"all-linear"` stays a string (peft's keyword); `"q_proj, v_proj"` -> ["q_proj", "v_proj"]."""
        if self.lora_target_modules.strip() == "all-linear":
            return "all-linear"
        return [name.strip() for name in self.lora_target_modules.split(",") if name.strip()]


@dataclass
class SFTOptions(TrainOptions):
    command = "sft"


@dataclass
class DPOOptions(TrainOptions):
    learning_rate: float = field(default=1e-6, metadata={"help": "peak learning rate (AdamW, linear decay)", "range": "(0, 1]"})
    beta: float = field(default=0.1, metadata={
        "help": "DPO beta: implicit reward = beta * (log p_policy - log p_ref); higher stays closer to the reference",
        "range": "(0, inf)"})

    command = "dpo"


def from_args(cls: type[TrainOptions], args: argparse.Namespace) -> TrainOptions:
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})
