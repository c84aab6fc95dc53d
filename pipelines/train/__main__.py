"""CLI: `python -m pipelines.train {sft,dpo} EXPORT_DIR [options]`, `python -m pipelines.train export MODEL_DIR
[--quant f16|q8_0|q4_k_m]` (pipelines/train/export.py) and `python -m pipelines.train merge A B [...]`
(pipelines/train/merge.py); user errors print one `error:` line and exit 2.

The options of each command are the fields of `SFTOptions` / `DPOOptions` (pipelines/train/options.py).
"""

from __future__ import annotations

import argparse
import sys

from pipelines.cli import Parser, add_option_flags, main_guard
from pipelines.core.errors import ResourceError
from pipelines.train.options import DPOOptions, SFTOptions, from_args

COMMANDS = {
    "sft": (SFTOptions, "supervised fine-tuning on the export's train_sft split (TRL SFTTrainer)"),
    "dpo": (DPOOptions, "DPO on the export's train_prefs split, evaluated on test_prefs (TRL DPOTrainer); "
                        "start from an SFT model with --model"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="pipelines.train", description="Train on an exported dataset.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{sft,dpo,export,merge}", parser_class=Parser)
    for name, (cls, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_option_flags(command, cls, positional=("export_dir",))
        command.add_argument("--debug", action="store_true", help="show tracebacks")
    sub.add_parser("export", help="a trained model as a GGUF file for the embedded engine "
                                  "(python -m pipelines.train export --help)", add_help=False)
    sub.add_parser("merge", help="one model from several through mergekit: linear, slerp or ties "
                                 "(python -m pipelines.train merge --help)", add_help=False)
    return parser


def train(argv: list[str]) -> int:
    if argv[:1] == ["export"]:
        from pipelines.train.export import main as export

        return export(argv[1:])
    if argv[:1] == ["merge"]:
        from pipelines.train.merge import main as merge

        return merge(argv[1:])
    args = build_parser().parse_args(argv)
    opts = from_args(COMMANDS[args.command][0], args)
    try:
        if args.command == "sft":
            from pipelines.train.sft import train_sft

            train_sft(opts)
        else:
            from pipelines.train.dpo import train_dpo

            train_dpo(opts)
    except (MemoryError, RuntimeError) as exc:  # torch's CPU and CUDA allocators raise RuntimeError subclasses
        if not isinstance(exc, MemoryError) and "out of memory" not in str(exc) and "can't allocate" not in str(exc):
            raise
        raise ResourceError(f"out of memory training {args.command} at --batch-size {opts.batch_size} and "
                            f"--max-length {opts.max_length}: lower either (--gradient-accumulation keeps the "
                            "effective batch), or add --lora") from None
    return 0


def main(argv: list[str] | None = None) -> int:
    return main_guard(train, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
