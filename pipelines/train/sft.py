"""Supervised fine-tuning on an export's `train_sft` split with TRL's `SFTTrainer`.

requires: `EXPORT/data/train_sft-*.parquet` with `messages` (a list of {role, content}), as ultrachat_200k.
provides: the model in the output dir (with --lora: merged there, adapter in `adapter/`) and `train_metrics.json`.

The split is reduced to `messages`, which TRL takes as a conversational dataset and renders with the model's chat
template. The `prompt` column must go: next to `messages` TRL would read it as the prompt-completion format.
A tool-use export (a `tools` column; messages with `tool_calls`) is rendered here instead, one text per row
(`pipelines.tools.chat.training_texts`): with the template's own tool format where it has one, else Hermes'
`<tool_call>` convention, since templates print a call's `arguments` with `tojson` and the export keeps them as
JSON strings.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq

from pipelines.train import common
from pipelines.train.options import SFTOptions


def train_sft(opts: SFTOptions, *, log=print) -> dict:
    """Fine-tune on `train_sft` and save to the output dir; returns the train metrics plus `output_dir`."""
    opts.validate()
    export_dir = Path(opts.export_dir).resolve()
    files = common.find_split(export_dir, "train_sft")
    trl = common.import_trl(opts)
    model = common.resolve_model(opts, log)
    output_dir = Path(opts.output_dir) if opts.output_dir else export_dir.parent / "sft-model"
    tool_use = "tools" in pq.read_schema(files[0]).names
    dataset = tool_texts(files, model) if tool_use else common.load_split(files, ["messages"])

    config = trl.SFTConfig(**common.config_kwargs(opts, output_dir))
    started = time.perf_counter()
    trainer = trl.SFTTrainer(model=model, args=config, train_dataset=dataset, peft_config=common.lora_config(opts))
    prepared = time.perf_counter() - started
    log(f"SFT of {Path(model).name} on {len(dataset)} conversations ({'LoRA' if opts.lora else 'all weights'}, "
        f"{config.device})")
    metrics = common.train(trainer, opts, output_dir, model=model, examples=len(dataset), prepared=prepared,
                           log=log)
    common.save(trainer, output_dir, lora=opts.lora)
    log(f"saved the model and train_metrics.json to {output_dir}")
    return {**metrics, "output_dir": str(output_dir)}


def tool_texts(files: list[Path], model: str):
    """A tool-use split as a `text` dataset, rendered with the model's tokenizer (see the module docstring)."""
    import json

    from datasets import Dataset
    from transformers import AutoTokenizer

    from pipelines.tools.chat import training_texts

    rows = common.load_split(files, ["messages", "tools"]).to_list()
    tokenizer = AutoTokenizer.from_pretrained(model)
    texts = training_texts(tokenizer, [(r["messages"], json.loads(r["tools"] or "[]")) for r in rows])
    return Dataset.from_dict({"text": texts})
