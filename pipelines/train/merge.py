"""`python -m pipelines.train merge A B [...] --method linear|slerp|ties [--output DIR]`: one model from several of the
same architecture and tokenizer, through mergekit (pinned in the `train` extra; its CPU path), so a merged variant is
exported (`pipelines.train export`) and served like any trained model.

- `linear`: the weighted mean of the models' weights (`--weights`, default equal).
- `slerp`: spherical interpolation between exactly two models at `--t` (0 = A, 1 = B).
- `ties`: TIES-merging of the task vectors of the models against `--base` (default A): each kept at `--density`,
  signs elected, the agreeing parts averaged.

Models of different architectures, shapes or tokenizers are refused in one line before mergekit runs.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from pipelines.core.errors import ConfigError
from pipelines.train.card import write_card
from pipelines.train.export import check_checkpoint

METHODS = ("linear", "slerp", "ties")
SHAPE_KEYS = ("architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads", "num_key_value_heads", "vocab_size")


def identity(model_dir: Path) -> tuple[dict, str]:
    """(the config fields a merge needs equal, a digest of the tokenizer's vocabulary)."""
    config = json.loads((model_dir / "config.json").read_text())
    shape = {k: config.get(k) for k in SHAPE_KEYS}
    tokenizer = model_dir / "tokenizer.json"
    vocab = json.loads(tokenizer.read_text()).get("model", {}).get("vocab") if tokenizer.is_file() else None
    text = json.dumps(vocab, sort_keys=True) if vocab is not None else (model_dir / "tokenizer.model").read_bytes().hex()
    return shape, hashlib.sha256(text.encode()).hexdigest()


def check_mergeable(models: list[Path]) -> None:
    for model in models:
        check_checkpoint(model)
    first_shape, first_vocab = identity(models[0])
    for model in models[1:]:
        shape, vocab = identity(model)
        differing = [k for k in SHAPE_KEYS if shape[k] != first_shape[k]]
        if differing:
            k = differing[0]
            raise ConfigError(f"cannot merge {models[0]} and {model}: their {k} differ ({first_shape[k]} vs "
                              f"{shape[k]}); merge models of one architecture and size")
        if vocab != first_vocab:
            raise ConfigError(f"cannot merge {models[0]} and {model}: their tokenizers differ (another vocabulary); "
                              "merge models trained from one base")


def merge_config(models: list[Path], method: str, weights: list[float] | None, t: float, density: float,
                 base: Path | None) -> dict:
    """mergekit's configuration for `method` (its YAML, as a dict)."""
    if method == "slerp":
        if len(models) != 2:
            raise ConfigError(f"slerp interpolates exactly two models, not {len(models)}: use linear or ties")
        return {"merge_method": "slerp", "base_model": str(models[0]), "dtype": "float32",
                "slices": [{"sources": [{"model": str(m), "layer_range": [0, layers(models[0])]} for m in models]}],
                "parameters": {"t": t}}
    weights = weights or [1.0 / len(models)] * len(models)
    if len(weights) != len(models):
        raise ConfigError(f"--weights gives {len(weights)} weights for {len(models)} models")
    if method == "linear":
        return {"merge_method": "linear", "dtype": "float32",
                "models": [{"model": str(m), "parameters": {"weight": w}} for m, w in zip(models, weights)]}
    base = base or models[0]
    return {"merge_method": "ties", "base_model": str(base), "dtype": "float32", "parameters": {"normalize": True},
            "models": [{"model": str(m), "parameters": {"weight": w, "density": density}}
                       for m, w in zip(models, weights) if m != base]}


def layers(model_dir: Path) -> int:
    return int(json.loads((model_dir / "config.json").read_text())["num_hidden_layers"])


def merge(models: list[Path], output: Path, method: str = "linear", weights: list[float] | None = None,
          t: float = 0.5, density: float = 0.5, base: Path | None = None, log=print) -> Path:
    """Merge `models` into `output` (a transformers checkpoint with the first model's tokenizer)."""
    if method not in METHODS:
        raise ConfigError(f"--method {method}: choose among {', '.join(METHODS)}")
    if len(models) < 2:
        raise ConfigError("a merge needs at least two models")
    models = [Path(m).resolve() for m in models]
    base = Path(base).resolve() if base else None
    check_mergeable(models + ([base] if base and base not in models else []))
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    config = merge_config(models, method, weights, t, density, base)
    log(f"merging {len(models)} models ({method}) into {output}")
    run_merge(MergeConfiguration.model_validate(config), str(output),
              options=MergeOptions(cuda=False, copy_tokenizer=True, lazy_unpickle=False, quiet=True, random_seed=0))
    (Path(output) / "merge.json").write_text(json.dumps(config, indent=2) + "\n")
    write_card(Path(output))  # in place of mergekit's own README.md
    return Path(output)


def main(argv: list[str]) -> int:
    from pipelines.cli import Parser

    parser = Parser(prog="pipelines.train merge", description=__doc__.split("\n")[0])
    parser.add_argument("models", type=Path, nargs="+", metavar="MODEL_DIR", help="checkpoints to merge (2 or more)")
    parser.add_argument("--method", default="linear", choices=METHODS, help="how to merge (default linear)")
    parser.add_argument("--output", type=Path, default=None, help="where to write (default: merged-<method> beside "
                                                                  "the first model)")
    parser.add_argument("--weights", default=None, help="comma-separated weights, one per model (linear, ties)")
    parser.add_argument("--t", type=float, default=0.5, help="slerp: 0 = the first model, 1 = the second")
    parser.add_argument("--density", type=float, default=0.5, help="ties: share of each task vector kept")
    parser.add_argument("--base", type=Path, default=None, help="ties: the base model (default the first)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    try:
        weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    except ValueError:
        raise ConfigError(f"--weights {args.weights}: give numbers separated by commas") from None
    output = args.output or args.models[0].resolve().parent / f"merged-{args.method}"
    merge(args.models, output, args.method, weights, args.t, args.density, args.base,
          log=lambda m: print(m, file=sys.stderr))
    print(output)
    return 0
