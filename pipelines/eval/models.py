"""What MODEL names on the command line, and the teacher client settings that serve it.

- a trained model directory (`pipelines.train sft|dpo|merge` output, any transformers checkpoint): exported to
  `DIR/gguf/model-q8_0.gguf` on first use (again when its weights are newer) and served by the embedded engine;
- a `.gguf` file, or an embedded model's name (`smollm2-135m`, `qwen2.5-coder-1.5b`): the embedded engine;
- `base_url=URL,model=NAME[,key_env=VAR][,SETTING=VALUE...]`: any OpenAI-compatible endpoint, with the teacher
  client's budget, price and batch settings (`mode=batch,max_cost=5,price_in=0.15,price_out=0.6`).

An embedded GGUF answers under its name and content digest, so the request cache never mixes two models. The
engine decodes `concurrency` requests together: llama.cpp's batched decoding is not batch-invariant, so the same
weights may answer a prompt differently beside other prompts (seen here at 4); `--concurrency 1` is exact and slower.
A rerun replays the cache either way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from pipelines.core.errors import ConfigError
from pipelines.teacher.config import TeacherConfig
from pipelines.teacher.server import EmbeddedConfig
from pipelines.teacher.weights import MODELS, file_digest
from pipelines.train.export import WEIGHTS, export_gguf, gguf_path


@dataclass(frozen=True)
class Model:
    spec: str  # as given
    name: str  # in tables and file names
    config: TeacherConfig
    checkpoint: Path | None = None  # the transformers checkpoint, where there is one (suites that score log-probs)


def served_gguf(model_dir: Path, log) -> Path:
    """The q8_0 GGUF of a checkpoint directory, exported when missing or older than the weights."""
    path = gguf_path(model_dir, "q8_0")
    weights = [model_dir / w for w in WEIGHTS if (model_dir / w).is_file()]
    if not path.is_file() or any(w.stat().st_mtime > path.stat().st_mtime for w in weights):
        export_gguf(model_dir, "q8_0", log=log)
    return path


SETTINGS = ("mode", "max_cost", "max_tokens", "price_in", "price_out", "batch_discount", "timeout_s", "max_retries")


def endpoint_settings(spec: str, fields: dict[str, str]) -> dict:
    """The teacher client settings an endpoint spec may add (budgets, prices, batch mode), typed like their defaults."""
    out = {}
    for key, value in fields.items():
        if key not in SETTINGS:
            raise ConfigError(f"model {spec!r}: unknown setting {key!r}; endpoints take {', '.join(SETTINGS)}")
        kind = type(getattr(TeacherConfig(), key))
        try:
            out[key] = kind(value)
        except ValueError:
            raise ConfigError(f"model {spec!r}: {key}={value!r} is not a {kind.__name__}") from None
    return out


def resolve(spec: str, log=print, concurrency: int = 4) -> Model:
    base = TeacherConfig(max_concurrency=concurrency, reasks=0)
    if spec.startswith("base_url="):
        fields = dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
        if not fields.get("model"):
            raise ConfigError(f"model {spec!r}: write base_url=URL,model=NAME[,key_env=VAR][,SETTING=VALUE...]")
        config = replace(base, base_url=fields.pop("base_url"), model=fields.pop("model"),
                         api_key_env=fields.pop("key_env", base.api_key_env), **endpoint_settings(spec, fields))
        return Model(spec, config.model.replace("/", "_"), config)
    path = Path(spec)
    if path.is_dir():
        gguf = served_gguf(path.resolve(), log)
        name = path.resolve().name
    elif path.suffix == ".gguf" and path.is_file():
        gguf, name = path.resolve(), path.stem
    elif spec in MODELS:
        return Model(spec, spec, replace(base, embedded=EmbeddedConfig(model=spec, engine="llama", slots=concurrency)))
    else:
        raise ConfigError(f"model {spec!r} is not a checkpoint directory, a .gguf file, an embedded model "
                          f"({', '.join(MODELS)}) or base_url=URL,model=NAME")
    config = replace(base, embedded=EmbeddedConfig(model=str(gguf), engine="llama", slots=concurrency))
    return Model(spec, f"{name}-{file_digest(gguf)[:6]}", config,
                 checkpoint=path.resolve() if path.is_dir() else None)

