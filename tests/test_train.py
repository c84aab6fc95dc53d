"""The trainers on tiny exports: 2-step CPU runs of SFT, DPO and LoRA DPO, TRL's format helpers on the preference
fixture, our preference metrics against DPOTrainer's own, and the CLI's error handling."""

import json
import math
import platform
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipelines.stages.export_prefs import EXPORT_PREFS_SCHEMA
from pipelines.train import common
from pipelines.train.__main__ import main
from pipelines.train.dpo import COLUMNS, train_dpo, with_lengths
from pipelines.train.metrics import evaluate_preferences, preference_metrics
from pipelines.train.options import DPOOptions, SFTOptions
from pipelines.train.sft import train_sft
from schemas import PREFERENCE, preference_id, prompt_id

REPO = Path(__file__).resolve().parents[1]

PAIRS = [
    ("What is 2 + 2?", "2 + 2 is 4.", "2 + 2 is 5."),
    ("Name a primary colour.", "Red is a primary colour.", "Green is a primary colour of paint."),
    ("What is the capital of France?", "Paris.", "Lyon."),
    ("Say hello in Spanish.", "Hola.", "Bonjour."),
    ("How many legs does a spider have?", "Eight.", "Six."),
    ("What gas do plants absorb?", "Carbon dioxide.", "Oxygen, mostly."),
    ("Give me an antonym of hot.", "Cold.", "Warm."),
    ("What is the boiling point of water at sea level?", "100 degrees Celsius.", "50 degrees Celsius."),
]
TINY = {"max_steps": 2, "max_length": 128, "batch_size": 2}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine, two spinning OpenMP threads run a step 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_shard(data: Path, split: str, rows: list[dict], schema=None) -> None:
    data.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), data / f"{split}-00000-of-00001.parquet")


def write_sft_export(root: Path) -> Path:
    """An export dir with train_sft and test_sft shards: prompt, prompt_id and messages, as ultrachat_200k."""
    rows = []
    for i, (q, a, _) in enumerate(PAIRS):
        messages = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        if i % 2:
            messages += [{"role": "user", "content": "Thanks, and again?"}, {"role": "assistant", "content": a}]
        rows.append({"prompt": q, "prompt_id": prompt_id(q), "messages": messages})
    write_shard(root / "export" / "data", "train_sft", rows)
    write_shard(root / "export" / "data", "test_sft", rows[:2])
    return root / "export"


# train_prefs as ExportPrefs writes it; test_prefs with the optional id, source and meta columns too
WITH_IDS = PREFERENCE.append(pa.field("ordering_agreement", pa.float64()))


def preference_row(i: int, question: str, good: str, bad: str) -> dict:
    """One row shaped like ultrafeedback_binarized (schemas.PREFERENCE); every third one has two prior turns."""
    prompt = [{"role": "user", "content": question}]
    if i % 3 == 1:
        prompt = [{"role": "user", "content": "I have a quiz question."}, {"role": "assistant", "content": "Go ahead."},
                  *prompt]
    chosen = [*prompt, {"role": "assistant", "content": good}]
    rejected = [*prompt, {"role": "assistant", "content": bad}]
    completions = [{"model": model, "principle": "helpfulness", "content": text,
                    "ratings": [{"aspect": "honesty", "rating": score, "rationale": "r"}], "overall": score}
                   for model, text, score in (("teacher-a", good, 9.0), ("teacher-b", bad, 3.0))]
    return {"id": preference_id(chosen, rejected), "prompt_id": prompt_id(question), "prompt": question,
            "chosen": chosen, "rejected": rejected, "messages": chosen, "score_chosen": 9.0, "score_rejected": 3.0,
            "chosen_model": "teacher-a", "rejected_model": "teacher-b", "completions": completions,
            "source": "test", "meta": "{}", "ordering_agreement": 1.0}


def write_prefs_export(root: Path, *, test_split: bool = True) -> Path:
    """An export dir with train_prefs (8 pairs) and, optionally, test_prefs (4 pairs)."""
    rows = [preference_row(i, *p) for i, p in enumerate(PAIRS)]
    write_shard(root / "export" / "data", "train_prefs", rows, EXPORT_PREFS_SCHEMA)
    if test_split:
        write_shard(root / "export" / "data", "test_prefs", rows[2:6], WITH_IDS)
    return root / "export"


def changed(out: Path) -> bool:
    """Whether the checkpoint in `out` differs from the embedded one it was trained from."""
    from safetensors.torch import load_file

    from pipelines.teacher.weights import ensure_checkpoint

    trained, base = load_file(out / "model.safetensors"), load_file(ensure_checkpoint() / "model.safetensors")
    assert trained.keys() == base.keys()
    return any(not torch.equal(trained[k], base[k]) for k in base)


def check_train_metrics(out: Path, command: str, lora: bool, bf16: bool = False) -> dict:
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["command"] == command and metrics["steps"] == 2
    assert math.isfinite(metrics["loss"]) and math.isfinite(metrics["mean_loss"])
    assert metrics["tokens"] > 0 and metrics["tokens_per_second"] > 0 and metrics["seconds"] > 0
    assert metrics["prepare_seconds"] > 0
    assert metrics["device"] == "cpu" and metrics["bf16"] is bf16
    assert bool(metrics["lora"]) is lora
    return metrics


def test_sft_smoke(tmp_path):
    result = train_sft(SFTOptions(str(write_sft_export(tmp_path)), **TINY))
    out = Path(result["output_dir"])
    assert out == tmp_path / "sft-model"
    assert (out / "tokenizer_config.json").exists()
    check_train_metrics(out, "sft", lora=False)
    assert changed(out)


def test_preference_fixture_is_trl_format(tmp_path):
    """As `load_dataset` reads it, each row is conversational, and TRL recovers the prompt: the turns before the
    last assistant turn, whose last user turn is the `prompt` string column."""
    from datasets import load_dataset
    from trl.data_utils import extract_prompt, is_conversational, maybe_extract_prompt

    export = write_prefs_export(tmp_path)
    dataset = load_dataset("parquet", data_files={"train": str(export / "data" / "train_prefs-*.parquet")})["train"]
    assert dataset.column_names == EXPORT_PREFS_SCHEMA.names
    for row in dataset:
        assert is_conversational({"chosen": row["chosen"]}) and is_conversational({"rejected": row["rejected"]})
        assert is_conversational({k: row[k] for k in COLUMNS})
        assert not is_conversational({"prompt": row["prompt"]})  # the string column: why train_dpo drops it
        extracted = maybe_extract_prompt(row)  # re-extracts, since `prompt` is a string next to conversations
        assert extracted == extract_prompt({k: row[k] for k in COLUMNS})
        assert extracted["prompt"] == row["chosen"][:-1] and extracted["prompt"][-1]["content"] == row["prompt"]
        assert extracted["chosen"] == row["chosen"][-1:] and extracted["rejected"] == row["rejected"][-1:]
        assert [m["role"] for m in extracted["chosen"] + extracted["rejected"]] == ["assistant", "assistant"]


def test_dpo_cli_smoke(tmp_path, capsys):
    export = write_prefs_export(tmp_path)
    argv = ["dpo", str(export), "--max-steps", "2", "--max-length", "128", "--batch-size", "2",
            "--learning-rate", "1e-5", "--no-group-by-length"]
    assert main(argv) == 0
    out = tmp_path / "dpo-model"
    check_train_metrics(out, "dpo", lora=False)
    prefs = json.loads((out / "preference_metrics.json").read_text())
    assert prefs["split"] == "test_prefs" and prefs["pairs"] == 4 and prefs["beta"] == 0.1
    before, after = prefs["before"], prefs["after"]
    for metrics in (before, after):
        for key in ("reward_accuracy", "loglik_accuracy", "loglik_accuracy_per_token"):
            assert 0 <= metrics[key] <= 1
    assert before["reward_accuracy"] == 0 and before["reward_margin"] == 0  # policy == reference
    assert after["reward_margin"] != 0 and after["logp_chosen"] != before["logp_chosen"]
    table = capsys.readouterr().out
    assert "reward_accuracy" in table and "before" in table and "after" in table
    assert changed(out)


def test_dpo_lora_without_test_split(tmp_path):
    from safetensors.torch import load_file

    export = write_prefs_export(tmp_path, test_split=False)
    # bf16 on a CPU (autocast), batches grouped by length (the default)
    opts = DPOOptions(str(export), **TINY, lora=True, lora_r=4, learning_rate=1e-3, bf16=True)
    result = train_dpo(opts, log=lambda *_: None)
    out = Path(result["output_dir"])
    check_train_metrics(out, "dpo", lora=True, bf16=True)
    assert result["preferences"]["split"] == "held-out train_prefs" and result["preferences"]["pairs"] == 1
    assert result["examples"] == 7  # the held-out pair is not trained on
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # B starts at zero
    assert changed(out)  # the merged model


def test_preference_metrics_match_dpo_trainer(tmp_path):
    """Our per-pair log-probs, reduced to TRL's batch means, equal DPOTrainer.evaluate()'s on the same pairs."""
    import trl

    export = write_prefs_export(tmp_path)
    pairs = common.load_split(common.find_split(export, "test_prefs"), COLUMNS)
    opts = DPOOptions(str(export), **TINY)
    config = trl.DPOConfig(**common.config_kwargs(opts, tmp_path / "out"), beta=opts.beta)
    config.per_device_eval_batch_size = len(pairs)  # one batch: TRL's mean is the mean over all pairs
    trainer = trl.DPOTrainer(model=common.resolve_model(opts, print), args=config, train_dataset=pairs,
                             eval_dataset=pairs)
    with_lengths(trainer)  # as train_dpo does: its sampler groups the eval split by length too
    tokenized = trainer.eval_dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
    ours, logps = evaluate_preferences(trainer.model, tokenized, trainer.data_collator, beta=0.1, batch_size=3)
    theirs = trainer.evaluate()
    assert logps.shape == (4, 2, 2) and (logps[..., 1] > 0).all()
    assert ours["logp_chosen"] == pytest.approx(theirs["eval_logps/chosen"], rel=1e-3)
    assert ours["logp_rejected"] == pytest.approx(theirs["eval_logps/rejected"], rel=1e-3)
    assert ours["reward_margin"] == 0 and theirs["eval_rewards/margins"] == pytest.approx(0, abs=1e-4)


def test_preference_metrics_worked_example():
    logps = torch.tensor([[[-10.0, 5], [-14.0, 4]], [[-9.0, 3], [-8.0, 2]]])
    ref = torch.tensor([[[-12.0, 5], [-13.0, 4]], [[-9.0, 3], [-8.0, 2]]])
    metrics = preference_metrics(logps, ref, beta=0.1)
    assert metrics["reward_accuracy"] == 0.5 and metrics["reward_margin"] == pytest.approx(0.15)
    assert metrics["loglik_accuracy"] == 0.5  # -10 > -14; -9 < -8
    assert metrics["loglik_accuracy_per_token"] == 1.0  # per token: -2 > -3.5; -3 > -4


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "pipelines.train", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def assert_one_error_line(proc, *words):
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert all(w in lines[0] for w in words), proc.stderr


def test_cli_missing_export_dir(tmp_path):
    assert_one_error_line(run_cli("sft", str(tmp_path / "nope")), "does not exist")


def test_cli_missing_splits(tmp_path):
    (tmp_path / "data").mkdir()
    assert_one_error_line(run_cli("sft", str(tmp_path)), "train_sft")
    write_shard(tmp_path / "data", "train_sft", [{"messages": [{"role": "user", "content": "hi"}]}])
    assert_one_error_line(run_cli("dpo", str(tmp_path)), "train_prefs")


def test_cli_bad_option_value(tmp_path):
    assert_one_error_line(run_cli("dpo", str(tmp_path), "--beta", "0"), "--beta")
    assert_one_error_line(run_cli("sft", str(tmp_path), "--max-length", "2"), "--max-length")


def test_cli_unknown_flag(tmp_path):
    for command in ("sft", "dpo"):
        proc = run_cli(command, str(tmp_path), "--no-such-flag")
        assert proc.returncode == 2 and "--no-such-flag" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_cli_help_lists_every_option():
    from dataclasses import fields

    for command, cls in (("sft", SFTOptions), ("dpo", DPOOptions)):
        help_text = run_cli(command, "--help").stdout
        for f in fields(cls):
            if f.name != "export_dir":
                assert "--" + f.name.replace("_", "-") in help_text, (command, f.name)
    assert "--beta" not in run_cli("sft", "--help").stdout


def test_training_out_of_memory_is_one_line_naming_the_settings_to_lower(tmp_path):
    import resource

    text = " ".join(f"word{i}" for i in range(600))
    rows = [{"prompt": f"Q{i}", "prompt_id": prompt_id(f"Q{i}"),
             "messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": text}]}
            for i in range(64)]
    write_shard(tmp_path / "export" / "data", "train_sft", rows)

    def little_memory():  # 5 GB of address space: the model loads, a 64 x 1024-token batch's logits do not fit
        resource.setrlimit(resource.RLIMIT_AS, (5 << 30, resource.RLIM_INFINITY))

    proc = subprocess.run([sys.executable, "-m", "pipelines.train", "sft", str(tmp_path / "export"), "--max-steps",
                           "1", "--batch-size", "64", "--max-length", "1024", "--output-dir", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600, preexec_fn=little_memory)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line[line.index("error:"):] for line in proc.stderr.splitlines() if "error:" in line]
    assert errors == ["error: out of memory training sft at --batch-size 64 and --max-length 1024: lower either "
                      "(--gradient-accumulation keeps the effective batch), or add --lora"]


MAPPED_BYTES = """
import ctypes, sys, torch
from pipelines.train.common import reuse_freed_memory

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
before = libc.mallinfo2().hblkhd
tensor = torch.ones(64 * 2**20)  # 256 MB
print(libc.mallinfo2().hblkhd - before)
"""


def test_training_keeps_freed_memory_in_the_heap():
    """`reuse_freed_memory`: a 256 MB activation comes from the heap, not a fresh mmap whose pages fault on first
    write (glibc's default past 32 MB)."""
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    mapped = {mode: int(subprocess.run([sys.executable, "-c", MAPPED_BYTES, mode], capture_output=True, text=True,
                                       check=True).stdout) for mode in ("default", "reuse")}
    assert mapped["default"] >= 256 * 2**20
    assert mapped["reuse"] == 0
