"""The bundled SFT trainer: a 2-step CPU run on a tiny export, and the CLI's error handling."""

import math
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.train.sft import train_sft

REPO = Path(__file__).resolve().parents[1]

PAIRS = [
    ("What is 2 + 2?", "2 + 2 is 4."),
    ("Name a primary colour.", "Red is a primary colour."),
    ("What is the capital of France?", "Paris."),
    ("Say hello in Spanish.", "Hola."),
    ("How many legs does a spider have?", "Eight."),
    ("What gas do plants absorb?", "Carbon dioxide."),
    ("Give me an antonym of hot.", "Cold."),
    ("What is the boiling point of water at sea level?", "100 degrees Celsius."),
]


def write_export(root: Path) -> Path:
    """A minimal export dir: train_sft and test_sft shards with prompt, prompt_id and messages."""
    data = root / "export" / "data"
    data.mkdir(parents=True)
    rows = []
    for i, (q, a) in enumerate(PAIRS):
        messages = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        if i % 2:
            messages += [{"role": "user", "content": "Thanks, and again?"}, {"role": "assistant", "content": a}]
        rows.append({"prompt": q, "prompt_id": f"p{i:03d}", "messages": messages})
    for split, part in (("train_sft", rows[:8]), ("test_sft", rows[:2])):
        pq.write_table(pa.Table.from_pylist(part), data / f"{split}-00000-of-00001.parquet")
    return data.parent


def test_train_sft_smoke(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from pipelines.server import ensure_checkpoint

    export = write_export(tmp_path)
    result = train_sft(export, max_steps=2, max_length=128)

    out = Path(result["output_dir"])
    assert out == tmp_path / "sft-model"
    assert result["steps"] == 2
    assert isinstance(result["train_loss"], float) and math.isfinite(result["train_loss"])
    assert (out / "tokenizer_config.json").exists()

    trained = AutoModelForCausalLM.from_pretrained(out).state_dict()
    base = AutoModelForCausalLM.from_pretrained(ensure_checkpoint()).state_dict()
    assert trained.keys() == base.keys()
    assert any(not torch.equal(trained[k], base[k]) for k in base)


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "pipelines.train", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_cli_missing_export_dir(tmp_path):
    proc = run_cli("sft", str(tmp_path / "nope"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_missing_train_split(tmp_path):
    (tmp_path / "data").mkdir()
    proc = run_cli("sft", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and "train_sft" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_unknown_flag(tmp_path):
    proc = run_cli("sft", str(tmp_path), "--no-such-flag")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
