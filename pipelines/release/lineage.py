"""Lineage: which files a build read (with content hashes and licenses) and which prompts its teachers were given.

- `input_files(recipe, cfg)`: the files the recipe's `inputs(cfg)` names (sources, seeds, benchmarks, built-in). These
  are what `refresh` compares between versions and what the card lists.
- `describe(files, run_dir)`: size, sha256 and license of each; hashes are cached in `run_dir/inputs.json` by
  (path, size, mtime), so a rerun does not read a large corpus twice.
- A file's license: `connectors.licenses.license_of`, unless the source names one (`?license=`).
- `prompt_hashes(stages)`: for every stage that talks to a teacher, sha256 of the files holding its prompt
  templates (`Stage.prompt_files`), so two versions made with different prompts are told apart.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from connectors.licenses import BUILT_IN_LICENSE, license_of
from connectors.sources import SourceSpec
from connectors.walk import data_files, expand
from pipelines.core.errors import ConfigError
from pipelines.core.files import write_json

PACKAGE = Path(__file__).resolve().parents[1]  # pipelines/: built-in data and prompt files are named from here


@dataclass(frozen=True)
class InputFile:
    role: str  # "source", "seeds", "benchmark" or "built-in" (a file of this package)
    spec: str  # as written in the config
    path: str
    size: int
    sha256: str
    license: str | None


def input_files(recipe, cfg) -> list[tuple[str, str, Path, str | None]]:
    """(role, spec, file, license option) for every file the recipe's `inputs(cfg)` names: the package's own data
    files first (the project's, Apache-2.0), then sources, seeds and benchmarks in config order."""
    named = recipe.inputs(cfg)
    out = [("built-in", name, PACKAGE / name, BUILT_IN_LICENSE) for name in named.built_in]
    for text in named.sources:
        spec = SourceSpec.parse(text)
        for path in expand(spec.path):
            out += [("source", text, f, spec.license) for f in data_files(path)]
    out += [("seeds", seeds, Path(seeds), None) for seeds in named.seeds]
    if named.benchmarks:
        from pipelines.dedup.decontam import Benchmark  # numba and numpy: only for recipes that decontaminate

        for text in named.benchmarks:
            out += [("benchmark", text, f, None) for f in Benchmark.parse(text).files()]
    return out


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def describe(files: list[tuple[str, str, Path, str | None]], cache_path: Path | None = None) -> list[InputFile]:
    """Size, content hash and license of each file (hashes cached by path, size and mtime in `cache_path`)."""
    cache = json.loads(cache_path.read_text()) if cache_path and cache_path.exists() else {}
    out = []
    for role, spec, path, option in files:
        if not path.is_file():
            raise ConfigError(f"{role} file {path} does not exist (from {spec!r})")
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in cache:
            cache[key] = sha256_file(path)
        out.append(InputFile(role, spec, str(path), stat.st_size, cache[key], option or license_of(path)))
    if cache_path is not None:
        write_json(cache_path, cache, indent=1)
    return out


def prompt_hashes(stages) -> list[dict]:
    """One row per teacher stage: its role and the sha256 of each file holding its prompts."""
    rows = []
    for stage in stages:
        if getattr(stage, "uses_teacher", False):  # a stage that asks a teacher (`Asks`)
            files = {name: sha256_file(PACKAGE / name) for name in stage.prompt_files}
            rows += [{"stage": stage.name, "role": role, "prompt_files": files}
                     for role in (stage.teacher_role, *stage.other_roles)]
    return rows
