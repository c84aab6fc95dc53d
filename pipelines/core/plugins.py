"""Modules kept outside the tree: recipes, eval suites and experiments are also found as the `*.py` files of the
folders an environment variable names (separated like PATH), and imported from their files."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path


def user_modules(variable: str) -> dict[str, Path]:
    """name -> file: every `*.py` not starting with `_` in the folders `variable` names; the first folder wins a
    name."""
    found: dict[str, Path] = {}
    for folder in filter(None, os.environ.get(variable, "").split(os.pathsep)):
        for path in sorted(Path(folder).glob("*.py")):
            if not path.name.startswith("_"):
                found.setdefault(path.stem, path)
    return found


def import_file(module_name: str, path: Path):
    """`path` imported as `module_name`, once per process; a module that fails to load is not kept."""
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    return sys.modules[module_name]
