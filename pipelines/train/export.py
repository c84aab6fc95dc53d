"""`python -m pipelines.train export MODEL_DIR [--quant f16|q8_0|q4_k_m]`: a trained model as a GGUF file that the
embedded engine serves (`--set teacher.embedded.model=MODEL_DIR/gguf/model-q8_0.gguf`) and any llama.cpp runs.

MODEL_DIR is an output of `pipelines.train sft|dpo` (a LoRA run's output holds the merged model) or any transformers
checkpoint; a bare LoRA adapter directory is merged into its base first, which must be a local checkpoint. The
conversion is llama.cpp's own `convert_hf_to_gguf.py` and `llama-quantize`, from the same pinned sources the engine is
built from (`pipelines.teacher.llama`): f16 and q8_0 straight from the converter, q4_k_m quantized from the f16 file.
The file appears whole or not at all (written beside, then renamed).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from pipelines.core.errors import ConfigError, PipelineError
from pipelines.core.processes import die_with_parent
from pipelines.teacher import llama

QUANTS = ("f16", "q8_0", "q4_k_m")
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZERS = ("tokenizer.json", "tokenizer.model")


def gguf_path(model_dir: Path, quant: str) -> Path:
    return Path(model_dir) / "gguf" / f"model-{quant}.gguf"


def check_checkpoint(model_dir: Path) -> None:
    """One line naming what a checkpoint directory lacks (config, weights, tokenizer)."""
    if not model_dir.is_dir():
        raise ConfigError(f"{model_dir} is not a directory: give a trained model's output directory")
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"{model_dir} has no config.json: not a transformers checkpoint")
    if not any((model_dir / name).is_file() for name in WEIGHTS):
        raise ConfigError(f"{model_dir} has no weights ({' or '.join(WEIGHTS[::2])}): the training did not finish "
                          "saving, or the files were moved")
    if not any((model_dir / name).is_file() for name in TOKENIZERS):
        raise ConfigError(f"{model_dir} has no tokenizer ({' or '.join(TOKENIZERS)}): save the tokenizer beside the "
                          "weights")


def merged_adapter(adapter_dir: Path, work: Path, log) -> Path:
    """A LoRA adapter directory merged into its base (a local checkpoint), saved under `work`."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    base = Path(config.get("base_model_name_or_path") or "")
    if not str(base) or not (base / "config.json").is_file():
        raise ConfigError(f"{adapter_dir} is a LoRA adapter whose base model {str(base) or '(none named)'} is not a "
                          f"local checkpoint: export the training output directory (it holds the merged model)")
    check_checkpoint(base)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"merging the LoRA adapter {adapter_dir} into {base}")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter_dir).merge_and_unload()
    model.save_pretrained(work)
    AutoTokenizer.from_pretrained(adapter_dir if any((adapter_dir / t).is_file() for t in TOKENIZERS)
                                  else base).save_pretrained(work)
    return work


def export_gguf(model_dir: Path, quant: str = "q8_0", log=print) -> Path:
    """Write `model_dir/gguf/model-<quant>.gguf`; returns its path."""
    if quant not in QUANTS:
        raise ConfigError(f"--quant {quant}: choose among {', '.join(QUANTS)}")
    model_dir = Path(model_dir).resolve()
    out = gguf_path(model_dir, quant)
    with tempfile.TemporaryDirectory(prefix="gguf-", dir=model_dir if model_dir.is_dir() else None) as scratch:
        source = model_dir
        if (model_dir / "adapter_config.json").is_file() and not (model_dir / "config.json").is_file():
            source = merged_adapter(model_dir, Path(scratch) / "merged", log)
        check_checkpoint(source)
        tmp = Path(scratch) / out.name  # beside the model, so the rename below is atomic; one per export
        if quant == "q4_k_m":
            f16 = Path(scratch) / "model-f16.gguf"
            convert(source, f16, "f16", log)
            quantize(f16, tmp, "Q4_K_M", log)
        else:
            convert(source, tmp, quant, log)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
    log(f"wrote {out} ({out.stat().st_size / 1e6:,.1f} MB)")
    return out


def convert(model_dir: Path, out: Path, outtype: str, log) -> None:
    """llama.cpp's converter on `model_dir`; an architecture it does not know is one line naming it."""
    script = llama.converter(log)
    env = {**os.environ, "PYTHONPATH": str(script.parent / "gguf-py"), "NO_LOCAL_GGUF": ""}
    log(f"converting {model_dir.name} to GGUF ({outtype}) with llama.cpp's convert_hf_to_gguf.py")
    proc = subprocess.run([sys.executable, str(script), str(model_dir), "--outtype", outtype, "--outfile", str(out)],
                          capture_output=True, text=True, env=env, preexec_fn=die_with_parent)
    if proc.returncode != 0:
        out.unlink(missing_ok=True)
        raise PipelineError(conversion_error(model_dir, proc.stderr + proc.stdout))


def conversion_error(model_dir: Path, output: str) -> str:
    """The converter's failure as one line: an unsupported architecture named, else its last line."""
    if found := re.search(r"Model (\S+) is not supported", output):
        return (f"{model_dir}: architecture {found.group(1)} is not supported by llama.cpp's converter "
                f"({llama.SOURCE}); a model of a supported architecture (Llama, Qwen2, Mistral, ...) exports")
    last = next((line for line in reversed(output.strip().splitlines()) if line.strip()), "no output")
    return f"converting {model_dir} to GGUF failed: {last.strip()[:300]}"


def quantize(f16: Path, out: Path, kind: str, log) -> None:
    binary = llama.quantize_binary()
    if not binary.is_file():
        log("llama-quantize is not built here yet: compiling it once from the pinned llama.cpp sources")
        binary = llama.build_quantize(log)
    proc = subprocess.run([str(binary), str(f16), str(out), kind], capture_output=True, text=True,
                          preexec_fn=die_with_parent)
    if proc.returncode != 0:
        out.unlink(missing_ok=True)
        last = next((line for line in reversed(proc.stderr.strip().splitlines()) if line.strip()), "no output")
        raise PipelineError(f"llama-quantize {kind} of {f16.name} failed: {last.strip()[:300]}")


def main(argv: list[str]) -> int:
    from pipelines.cli import Parser

    parser = Parser(prog="pipelines.train export", description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="a trained model's output directory")
    parser.add_argument("--quant", default="q8_0", choices=QUANTS, help="the GGUF type (default q8_0)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    export_gguf(args.model_dir, args.quant, log=lambda m: print(m, file=sys.stderr))
    return 0

