"""Direct preference optimisation on an export's `train_prefs` split with TRL's `DPOTrainer`.

requires: `EXPORT/data/train_prefs-*.parquet` (and `test_prefs-*`, optional) shaped like ultrafeedback_binarized:
`prompt` (str), `prompt_id`, `chosen` and `rejected` (the prompt turns, then one assistant turn), `messages`, scores.
provides: the model in the output dir (with --lora: merged there, adapter in `adapter/`), `train_metrics.json` and
`preference_metrics.json` (see `metrics.py`), before and after training, on `test_prefs`.

What DPOTrainer (trl 1.16, `_prepare_dataset`) does with these columns, and so why we keep `chosen` and `rejected`:
- No `prompt` column: it maps `extract_prompt`, which takes the longest common prefix of the two message lists as
  the prompt (here every turn before the last assistant turn) and leaves one assistant turn in each of `chosen` and
  `rejected`. This is the implicit-prompt path, and the one we use.
- A `prompt` column is used as is. `maybe_extract_prompt` would re-extract when `prompt` is a string and `chosen`
  a conversation, but DPOTrainer does not call it: the string `prompt` would be concatenated with a message list and
  fail (`TypeError` or `AttributeError`, depending on PYTHONHASHSEED, since `is_conversational` picks an arbitrary
  key of the example). So `prompt` must go; `messages`, scores and metadata are unused by the DPO loss and go too.
- It then applies the chat template: prompt with the generation prompt, prompt + chosen, prompt + rejected; the
  completion is what follows their common token prefix (no EOS added: the template closes the turn). Pairs whose
  prompt alone fills `max_length` are dropped; longer sequences are truncated at the end.
The reference model is the starting model (a frozen copy; with LoRA, the adapter switched off); its log-probs are
computed once before training (`precompute_ref_log_probs`), not in every step.
"""

from __future__ import annotations

import time
from pathlib import Path

from pipelines.core.errors import ConfigError, SourceError
from pipelines.train import common
from pipelines.train.metrics import evaluate_preferences, format_table
from pipelines.train.options import DPOOptions

COLUMNS = ["chosen", "rejected"]


def train_dpo(opts: DPOOptions, *, log=print) -> dict:
    """DPO on `train_prefs`, evaluated on `test_prefs` before and after; returns train and preference metrics."""
    opts.validate()
    export_dir = Path(opts.export_dir).resolve()
    train_files = common.find_split(export_dir, "train_prefs")
    test_files = sorted((export_dir / "data").glob("test_prefs-*.parquet"))
    trl = common.import_trl(opts)
    model = common.resolve_model(opts, log)
    output_dir = Path(opts.output_dir) if opts.output_dir else export_dir.parent / "dpo-model"

    train_set = common.load_split(train_files, COLUMNS)
    if test_files:
        test_set, eval_split = common.load_split(test_files, COLUMNS), "test_prefs"
    else:
        if len(train_set) < 2:
            raise SourceError(f"{export_dir} has no test_prefs split and a single train_prefs pair; "
                              "export more pairs or a test_prefs split")
        held = train_set.train_test_split(test_size=max(1, len(train_set) // 10), seed=opts.seed)
        train_set, test_set = held["train"], held["test"]
        eval_split = "held-out train_prefs"
        log(f"no test_prefs split: evaluating on {len(test_set)} held-out train_prefs pairs, not trained on")

    # the reference log-probs once, before training, not a reference forward in every step of every epoch
    config = trl.DPOConfig(**common.config_kwargs(opts, output_dir), beta=opts.beta, precompute_ref_log_probs=True)
    started = time.perf_counter()
    trainer = trl.DPOTrainer(model=model, args=config, train_dataset=train_set, eval_dataset=test_set,
                             peft_config=common.lora_config(opts))
    prepared = time.perf_counter() - started
    if opts.group_by_length:
        with_lengths(trainer)
    pairs = trainer.eval_dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
    if len(trainer.train_dataset) == 0 or len(pairs) == 0:
        raise ConfigError(f"every pair's prompt fills --max-length {opts.max_length}; raise it")

    def evaluate(reference=None):
        return evaluate_preferences(trainer.model, pairs, trainer.data_collator, beta=opts.beta,
                                    batch_size=opts.batch_size, reference=reference, bf16=opts.bf16)

    log(f"DPO of {Path(model).name} on {len(trainer.train_dataset)} pairs ({'LoRA' if opts.lora else 'all weights'}, "
        f"{config.device}); evaluating on {len(pairs)} {eval_split} pairs")
    before, ref_logps = evaluate()
    metrics = common.train(trainer, opts, output_dir, model=model, examples=len(trainer.train_dataset),
                           prepared=prepared, log=log)
    after, _ = evaluate(reference=ref_logps)
    prefs = {"split": eval_split, "pairs": len(pairs), "beta": opts.beta, "before": before, "after": after}
    common.write_json(output_dir / "preference_metrics.json", prefs)
    common.save(trainer, output_dir, lora=opts.lora)
    log(f"preferences on {len(pairs)} {eval_split} pairs (before training the policy is the reference: rewards 0)")
    log(format_table(before, after))
    log(f"saved the model, train_metrics.json and preference_metrics.json to {output_dir}")
    return {**metrics, "output_dir": str(output_dir), "preferences": prefs}


def with_lengths(trainer) -> None:
    """A `length` column (prompt plus the longer answer: what a batch pads to) for the length-grouped sampler (of
    the train and the eval split), kept through the trainer's removal of columns the model does not take."""
    def length(r):
        return {common.LENGTH: len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"]))}

    trainer.train_dataset = trainer.train_dataset.map(length)
    if trainer.eval_dataset is not None:
        trainer.eval_dataset = trainer.eval_dataset.map(length)
    trainer._set_signature_columns_if_needed()
    trainer._signature_columns = [*trainer._signature_columns, common.LENGTH]
