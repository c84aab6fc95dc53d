"""A trained model's Hugging Face model card (`MODEL_DIR/README.md`): base model, training settings and metrics, the
datasets on its lineage (the exports it and the models it started from were trained on, with their cards' names),
and its evaluation results as `model-index` (`eval_results.json`, written by `pipelines.eval`). Written by
`pipelines.train sft|dpo|merge` and updated by every eval of the directory; `huggingface_hub.ModelCard` loads it."""

from __future__ import annotations

import json
from pathlib import Path

SUITE_METRICS = {  # suite -> (dataset type, dataset name, metric type, metric name)
    "ifbench": ("allenai/IFBench_test", "IFBench (test)", "accuracy", "prompt-level strict accuracy"),
    "ifeval_dev": ("ifeval_dev", "convoforge's IFEval-type dev set", "accuracy", "prompt-level strict accuracy"),
    "gsm8k": ("openai/gsm8k", "GSM8K (test)", "accuracy", "exact match"),
    "judged": ("tatsu-lab/alpaca_eval", "AlpacaEval instructions", "win_rate", "win rate against the baseline"),
    "prefs": ("test_prefs", "the export's test_prefs", "accuracy", "preference accuracy (log-likelihood)"),
}
RESULTS = "eval_results.json"


def lineage(model_dir: Path) -> list[dict]:
    """The training runs from this model back to its root: [{dir, command, export, model, ...metrics}]."""
    runs, seen, current = [], set(), Path(model_dir).resolve()
    while current not in seen and (current / "train_metrics.json").is_file():
        seen.add(current)
        metrics = json.loads((current / "train_metrics.json").read_text())
        runs.append({"dir": str(current), **metrics})
        parent = Path(str(metrics.get("model") or ""))
        if not parent.is_dir():
            break
        current = parent.resolve()
    return runs


def root_model(runs: list[dict], model_dir: Path) -> str:
    """The base model at the root of the lineage: a Hub-style name when the checkpoint names one."""
    from pipelines.teacher.weights import MODELS, checkpoint_dir

    start = Path(runs[-1]["model"]) if runs and runs[-1].get("model") else Path(model_dir)
    for key, model in MODELS.items():  # an embedded model's checkpoint: its upstream repository (first in its note)
        if start.resolve() == checkpoint_dir(key).resolve():
            return model.note.split()[0]
    config = start / "config.json"
    name = json.loads(config.read_text()).get("_name_or_path") if config.is_file() else None
    return name if name and "/" in name and not Path(name).exists() else start.name


def record_eval(model_dir: Path, suite: str, summary: dict, eval_dir: Path, baseline: str | None) -> None:
    """Keep a suite's latest result beside the model (`eval_results.json`) and write the card again."""
    path = Path(model_dir) / RESULTS
    results = json.loads(path.read_text()) if path.is_file() else {}
    results[suite] = {"score": summary["score"], "items": summary["scored"], "baseline": baseline,
                      "difference": summary.get("difference"), "eval_dir": str(eval_dir)}
    path.write_text(json.dumps(results, indent=2) + "\n")
    write_card(model_dir)


def write_card(model_dir: Path) -> Path:
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    model_dir = Path(model_dir)
    runs = lineage(model_dir)
    results_path = model_dir / RESULTS
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    exports = [Path(r["export"]) for r in runs if r.get("export")]
    evals = [EvalResult(task_type="text-generation", dataset_type=SUITE_METRICS[s][0], dataset_name=SUITE_METRICS[s][1],
                        metric_type=SUITE_METRICS[s][2], metric_name=SUITE_METRICS[s][3],
                        metric_value=round(found["score"][0], 4))
             for s, found in results.items() if s in SUITE_METRICS and found["score"][0] is not None]
    data = ModelCardData(model_name=model_dir.name, base_model=root_model(runs, model_dir), library_name="transformers",
                         tags=["convoforge", *(r["command"] for r in runs if r.get("command"))],
                         eval_results=evals or None, license="apache-2.0")
    lines = [f"# {model_dir.name}", "",
             "Trained with convoforge's `pipelines.train` on datasets it built. A small model trained on a CPU is for "
             "trying the pipeline: read its evaluation results by their confidence intervals.", "", "## Training", ""]
    for run in runs:
        lora = run.get("lora")
        lines.append(f"- `{run.get('command')}` of `{Path(str(run.get('model'))).name}` on `{run.get('export')}`: "
                     f"{run.get('examples')} examples, {run.get('steps')} steps, final loss {run.get('loss'):.4f}, "
                     f"{run.get('device')}" + (f", LoRA r={lora['r']} alpha={lora['alpha']}" if lora else ""))
    if (model_dir / "merge.json").is_file():
        merge = json.loads((model_dir / "merge.json").read_text())
        lines.append(f"- merged with mergekit ({merge['merge_method']}); its settings are in `merge.json`")
    lines += ["", "## Datasets", ""]
    lines += [f"- `{e}`" + (" (its card: `README.md` there)" if (e / "README.md").is_file() else "") for e in exports] \
        or ["- not recorded"]
    lines += ["", "## Evaluation", ""]
    for suite, found in results.items():
        low, high = found["score"][1], found["score"][2]
        diff = found.get("difference")
        lines.append(f"- `{suite}`: {found['score'][0]:.3f} (95% CI {low:.3f}-{high:.3f}) on {found['items']} items"
                     + (f"; against `{found['baseline']}`: {diff[0]:+.3f} ({diff[1]:+.3f} to {diff[2]:+.3f})"
                        if diff else "") + f" (`{found['eval_dir']}`)")
    if not results:
        lines.append("- not evaluated yet: `python -m pipelines.eval MODEL_DIR`")
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")
    card.save(model_dir / "README.md")
    return model_dir / "README.md"
