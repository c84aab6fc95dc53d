"""`python -m pipelines.train export` and `merge`: a model trained here (LoRA SFT, 2 steps) as f16, q8_0 and q4_k_m
GGUF files made by llama.cpp's own converter and llama-quantize, read back with `gguf`, served by the embedded engine;
a bare LoRA adapter merged into its base; the trained model merged with its base by mergekit (linear, slerp, ties)
and exported; and every broken input as one `error:` line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFReader

from pipelines.teacher.server import EmbeddedConfig, EmbeddedServer
from pipelines.teacher.weights import display_name
from pipelines.train.export import export_gguf, gguf_path
from pipelines.train.options import SFTOptions
from pipelines.train.sft import train_sft
from test_train import TINY, write_sft_export

ROOT = Path(__file__).resolve().parents[1]
FILE_TYPES = {"f16": 1, "q8_0": 7, "q4_k_m": 15}  # llama.cpp's general.file_type


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A LoRA SFT output (the merged model, its adapter in adapter/), with a learning rate that moves the weights."""
    root = tmp_path_factory.mktemp("gguf")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_sft(SFTOptions(str(write_sft_export(root)), **TINY, lora=True, lora_r=4, learning_rate=5e-3),
                           log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    return Path(result["output_dir"])


def tensor(path: Path, name: str) -> np.ndarray:
    found = next(t for t in GGUFReader(path).tensors if t.name == name)
    return np.asarray(found.data, dtype=np.float32).reshape(tuple(reversed([int(d) for d in found.shape])))


def v_proj(model_dir: Path) -> np.ndarray:
    from safetensors.numpy import load_file

    return load_file(model_dir / "model.safetensors")["model.layers.0.self_attn.v_proj.weight"].astype(np.float32)


def test_a_trained_model_exports_to_every_type_and_the_engine_serves_it(trained, tmp_path):
    for quant, file_type in FILE_TYPES.items():
        path = export_gguf(trained, quant, log=lambda m: None)
        assert path == gguf_path(trained, quant) and path.stat().st_size > 20e6
        reader = GGUFReader(path)
        assert int(reader.fields["general.file_type"].parts[-1][0]) == file_type
        assert reader.fields["general.architecture"].contents() == "llama"
    assert not list((trained / "gguf").glob("*.tmp")) and not list(trained.glob("gguf-*"))  # no leftovers
    # the trained (LoRA-merged) weights are what the f16 file holds, not the base model's
    base = json.loads((trained / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    exported, merged = tensor(gguf_path(trained, "f16"), "blk.0.attn_v.weight"), v_proj(trained)
    assert np.allclose(exported, merged, atol=2e-3) and not np.allclose(exported, v_proj(Path(base)), atol=1e-5)
    server = EmbeddedServer(tmp_path / "server.log", log=lambda m: None,
                            config=EmbeddedConfig(model=str(gguf_path(trained, "q8_0")), engine="llama")).start()
    try:
        from openai import OpenAI

        answer = OpenAI(base_url=server.base_url, api_key="none").chat.completions.create(
            model=server.model, messages=[{"role": "user", "content": "What is 2 + 2?"}], max_tokens=8, temperature=0)
        assert answer.choices[0].message.content.strip()
    finally:
        server.stop()


def test_a_bare_lora_adapter_is_merged_into_its_local_base(trained, tmp_path):
    adapter = tmp_path / "adapter"
    shutil.copytree(trained / "adapter", adapter)
    path = export_gguf(adapter, "f16", log=lambda m: None)
    assert np.allclose(tensor(path, "blk.0.attn_v.weight"), v_proj(trained), atol=2e-3)


def run_export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.train", "export", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_broken_checkpoints_are_one_error_line(trained, tmp_path):
    def broken(name: str, drop: tuple[str, ...] = (), config: dict | None = None) -> Path:
        folder = tmp_path / name
        shutil.copytree(trained, folder, ignore=shutil.ignore_patterns("adapter", "gguf", *drop))
        if config is not None:
            (folder / "config.json").write_text(json.dumps({**json.loads((folder / "config.json").read_text()),
                                                            **config}))
        return folder

    orphan = tmp_path / "orphan"
    shutil.copytree(trained / "adapter", orphan)
    settings = json.loads((orphan / "adapter_config.json").read_text())
    (orphan / "adapter_config.json").write_text(json.dumps({**settings, "base_model_name_or_path": "/nowhere/base"}))
    cases = {
        "has no weights": [str(broken("no-weights", drop=("model.safetensors",)))],
        "has no tokenizer": [str(broken("no-tokenizer", drop=("tokenizer.json", "tokenizer.model")))],
        "architecture NotARealModelForCausalLM is not supported": [
            str(broken("odd", config={"architectures": ["NotARealModelForCausalLM"]}))],
        "is a LoRA adapter whose base model /nowhere/base is not a local checkpoint": [str(orphan)],
        "is not a directory": [str(tmp_path / "missing")],
        "invalid choice: 'q3_k'": [str(trained), "--quant", "q3_k"],
    }
    for expected, args in cases.items():
        proc = run_export(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert lines[-1].startswith("error:") and expected in lines[-1], (expected, proc.stderr[-2000:])
        assert not list(Path(args[0]).glob("gguf/*")) or args[0] == str(trained)  # nothing half-written


def test_merges_are_the_weights_they_say_and_export_like_any_model(trained, tmp_path):
    from pipelines.train.merge import merge

    base = Path(json.loads((trained / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"])
    a, b = v_proj(base), v_proj(trained)
    linear = merge([base, trained], tmp_path / "linear", "linear", weights=[0.25, 0.75], log=lambda m: None)
    assert np.allclose(v_proj(linear), 0.25 * a + 0.75 * b, atol=1e-5)
    slerp = merge([base, trained], tmp_path / "slerp", "slerp", t=0.0, log=lambda m: None)
    assert np.allclose(v_proj(slerp), a, atol=1e-5)  # t = 0: the first model
    ties = merge([base, trained], tmp_path / "ties", "ties", density=1.0, log=lambda m: None)
    assert np.allclose(v_proj(ties), b, atol=1e-4)  # one task vector, all of it kept: the trained model
    assert json.loads((ties / "merge.json").read_text())["merge_method"] == "ties"
    path = export_gguf(linear, "q8_0", log=lambda m: None)
    assert int(GGUFReader(path).fields["general.file_type"].parts[-1][0]) == FILE_TYPES["q8_0"]
    # two models both named model-q8_0.gguf answer under different names: the name is in every cache key
    other = export_gguf(trained, "q8_0", log=lambda m: None)
    assert path.name == other.name and display_name(str(path)) != display_name(str(other))
    assert display_name(str(path)).startswith("model-q8_0-")


def run_merge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.train", "merge", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_merges_of_unlike_models_are_one_error_line(trained, tmp_path):
    wider = tmp_path / "wider"
    shutil.copytree(trained, wider, ignore=shutil.ignore_patterns("adapter", "gguf"))
    config = json.loads((wider / "config.json").read_text())
    (wider / "config.json").write_text(json.dumps({**config, "hidden_size": config["hidden_size"] * 2}))
    other_vocab = tmp_path / "other-vocab"
    shutil.copytree(trained, other_vocab, ignore=shutil.ignore_patterns("adapter", "gguf"))
    tokenizer = json.loads((other_vocab / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    first, second = list(vocab)[100:102]
    vocab[first], vocab[second] = vocab[second], vocab[first]  # two tokens' ids swapped: another tokenizer
    (other_vocab / "tokenizer.json").write_text(json.dumps(tokenizer))
    cases = {
        "their hidden_size differ (576 vs 1152)": [str(trained), str(wider)],
        "their tokenizers differ": [str(trained), str(other_vocab)],
        "slerp interpolates exactly two models, not 3": [str(trained)] * 3 + ["--method", "slerp"],
        "a merge needs at least two models": [str(trained)],
        "has no config.json": [str(trained), str(tmp_path)],
    }
    for expected, args in cases.items():
        proc = run_merge(*args, "--output", str(tmp_path / "out"))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert lines[-1].startswith("error:") and expected in lines[-1], (expected, proc.stderr[-2000:])
        assert not (tmp_path / "out").exists()
