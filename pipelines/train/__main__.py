"""CLI: `python -m pipelines.train sft EXPORT_DIR [options]`; user errors print one `error:` line and exit 2."""

from __future__ import annotations

import argparse
import sys
import traceback

from pipelines.errors import PipelineError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.train", description="Train on an exported dataset.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{sft}")
    sft = sub.add_parser("sft", help="supervised fine-tuning on the export's train_sft split (TRL, CPU)")
    sft.add_argument("export_dir", metavar="EXPORT_DIR", help="directory written by the export stage")
    sft.add_argument("--model", metavar="PATH", help="transformers checkpoint dir (default: embedded SmolLM2-135M)")
    sft.add_argument("--output-dir", metavar="DIR", help="where to save the model (default: EXPORT_DIR/../sft-model)")
    sft.add_argument("--max-steps", type=int, default=10, metavar="N", help="optimizer steps (default 10)")
    sft.add_argument("--batch-size", type=int, default=2, metavar="N", help="per-device batch size (default 2)")
    sft.add_argument("--learning-rate", type=float, default=5e-5, metavar="F", help="learning rate (default 5e-5)")
    sft.add_argument("--max-length", type=int, default=512, metavar="N", help="max tokens per example (default 512)")
    sft.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "sft":
            from pipelines.train.sft import train_sft

            train_sft(
                args.export_dir,
                model=args.model,
                output_dir=args.output_dir,
                max_steps=args.max_steps,
                batch_size=args.batch_size,
                learning_rate=args.learning_rate,
                max_length=args.max_length,
            )
    except PipelineError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
