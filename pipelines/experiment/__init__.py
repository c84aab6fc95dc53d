"""`python -m pipelines.experiment`: data -> train -> eval as one resumable command, and ablations over it.

An experiment is a module defining `ABOUT` (a line for the report) and `STEPS` (a tuple of `pipelines.experiment.steps`
Build, Train, Export and Eval), found in `pipelines/experiments/` and in the folders named by
`PIPELINES_EXPERIMENT_PATH` (like recipes; a built-in name cannot be shadowed).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from pipelines.core.errors import ConfigError
from pipelines.core.plugins import import_file, user_modules


def _modules() -> dict[str, str | Path]:
    import pipelines.experiments as shipped

    found: dict[str, str | Path] = dict(user_modules("PIPELINES_EXPERIMENT_PATH"))
    for module in pkgutil.iter_modules(shipped.__path__):
        if not module.name.startswith("_"):
            found[module.name] = f"pipelines.experiments.{module.name}"
    return dict(sorted(found.items()))


def load_experiment(name: str):
    where = _modules().get(name)
    if where is None:
        raise ConfigError(f"unknown experiment {name!r}; available: {', '.join(_modules())} (or add NAME.py to a "
                          "folder named by PIPELINES_EXPERIMENT_PATH)")
    if isinstance(where, str):
        module = importlib.import_module(where)
    else:
        try:
            module = import_file(f"pipelines_experiment_{name}", where)
        except Exception as exc:  # noqa: BLE001 - a user's module failing in any way is one line
            raise ConfigError(f"experiment {name} ({where}) does not load: {type(exc).__name__}: {exc}") from None
    if not isinstance(getattr(module, "STEPS", None), tuple) or not hasattr(module, "ABOUT"):
        raise ConfigError(f"experiment {name} ({getattr(module, '__file__', where)}) must define ABOUT and STEPS")
    names = [s.name for s in module.STEPS]
    if len(set(names)) != len(names) or not all(n.isidentifier() for n in names):
        raise ConfigError(f"experiment {name}: step names must be distinct identifiers, got {names}")
    for step in module.STEPS:  # a misspelt setting fails now, not after the steps before it have run for an hour
        if unknown := sorted(set(step.settings) - set(step.valid_keys())):
            raise ConfigError(f"experiment {name}: step {step.name} has no setting {unknown[0]!r}; valid keys: "
                              f"{', '.join(step.valid_keys()) or 'none'}")
    return module
