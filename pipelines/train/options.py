"""Training options: one dataclass per command, sharing `TrainOptions`; the CLI is generated from their fields.

Each field becomes a flag (`learning_rate` -> `--learning-rate`, a bool -> a switch) whose help is the field's
`metadata["help"]`, as in TRL's config classes. `export_dir` is the positional argument.
"""

from __future__ import annotations

import argparse
import typing
from dataclasses import dataclass, field, fields

from pipelines.core.errors import ConfigError


@dataclass
class TrainOptions:
    export_dir: str = field(metadata={"help": "directory written by the export stage (holds data/<split>-*.parquet)"})
    model: str | None = field(default=None, metadata={
        "help": "transformers checkpoint dir to start from (default: the embedded SmolLM2-135M)", "metavar": "PATH"})
    output_dir: str | None = field(default=None, metadata={
        "help": "where to save the model and metrics (default: EXPORT_DIR/../<command>-model)", "metavar": "DIR"})
    learning_rate: float = field(default=5e-5, metadata={"help": "peak learning rate (AdamW, linear decay)"})
    max_length: int = field(default=1024, metadata={"help": "max tokens per sequence; longer ones are truncated"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the training split"})
    max_steps: int = field(default=0, metadata={
        "help": "stop after N optimizer steps, overriding --epochs; 0 trains for --epochs"})
    batch_size: int = field(default=2, metadata={"help": "examples per device and forward pass"})
    gradient_accumulation: int = field(default=1, metadata={"help": "forward passes per optimizer step"})
    lora: bool = field(default=False, metadata={"help": "train a LoRA adapter (peft) instead of all weights"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    lora_target_modules: str = field(default="all-linear", metadata={
        "help": "comma-separated module names to adapt, e.g. q_proj,v_proj, or all-linear"})
    bf16: bool = field(default=False, metadata={"help": "bfloat16 mixed precision (GPU only; CPU runs stay fp32)"})
    seed: int = field(default=42, metadata={"help": "random seed (data order, LoRA init)"})

    command = "train"

    def validate(self) -> None:
        """Raise `ConfigError` naming the first out-of-range option."""
        checks = [
            (self.learning_rate > 0, "--learning-rate must be > 0"),
            (self.max_length >= 8, "--max-length must be >= 8"),
            (self.epochs > 0, "--epochs must be > 0"),
            (self.max_steps >= 0, "--max-steps must be >= 0"),
            (self.batch_size >= 1, "--batch-size must be >= 1"),
            (self.gradient_accumulation >= 1, "--gradient-accumulation must be >= 1"),
            (self.lora_r >= 1, "--lora-r must be >= 1"),
            (0 <= self.lora_dropout < 1, "--lora-dropout must be in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

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
    learning_rate: float = field(default=1e-6, metadata={"help": "peak learning rate (AdamW, linear decay)"})
    beta: float = field(default=0.1, metadata={
        "help": "DPO beta: implicit reward = beta * (log p_policy - log p_ref); higher stays closer to the reference"})

    command = "dpo"

    def validate(self) -> None:
        super().validate()
        if not self.beta > 0:
            raise ConfigError("--beta must be > 0")


METAVARS = {int: "N", float: "F", str: "TEXT"}


def add_arguments(parser: argparse.ArgumentParser, cls: type[TrainOptions]) -> None:
    """One argument per field of `cls`: `export_dir` positional, the rest `--flags` with help and default."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        help_text = f.metadata["help"]
        if f.name == "export_dir":
            parser.add_argument(f.name, metavar="EXPORT_DIR", help=help_text)
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        if kind is bool:
            parser.add_argument(flag, action="store_true", help=help_text)
            continue
        kind = next(t for t in typing.get_args(kind) if t is not type(None)) if typing.get_args(kind) else kind
        if f.default is not None:
            help_text += f" (default: {f.default})"
        parser.add_argument(flag, type=kind, default=f.default, metavar=f.metadata.get("metavar", METAVARS[kind]),
                            help=help_text)


def from_args(cls: type[TrainOptions], args: argparse.Namespace) -> TrainOptions:
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})
