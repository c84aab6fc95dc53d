"""What MODEL names on the command line, and the teacher client settings that serve it.

- a trained model directory (`pipelines.train sft|dpo|merge` output, any transformers checkpoint): exported to
  `DIR/gguf/model-q8_0.gguf` on first use (again when its weights are newer) and served by the embedded engine;
- a `.gguf` file, or an embedded model's name (`smollm2-135m`, `qwen2.5-coder-1.5b`): the embedded engine;
- `base_url=URL,model=NAME[,key_env=VAR]`: any OpenAI-compatible endpoint.

An embedded GGUF answers under its name and content digest, so the request cache never mixes two models. The
engine decodes `concurrency` requests together: llama.cpp's batched decoding is not batch-invariant, so the same
weights may answer a prompt differently beside other prompts (seen here at 4); `--concurrency 1` is exact and slower.
A rerun replays the cache either way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from pipelines.core.errors import ConfigError
from pipelines.teacher.client import TeacherConfig
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


def resolve(spec: str, log=print, concurrency: int = 4) -> Model:
    base = TeacherConfig(max_concurrency=concurrency, reasks=0)
    if spec.startswith("base_url="):
        fields = dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
        if not fields.get("model"):
            raise ConfigError(f"model {spec!r}: write base_url=URL,model=NAME[,key_env=VAR]")
        config = replace(base, base_url=fields["base_url"], model=fields["model"],
                         api_key_env=fields.get("key_env", base.api_key_env))
        return Model(spec, fields["model"].replace("/", "_"), config)
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

