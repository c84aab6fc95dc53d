"""Recipes: one module per recipe, each with a frozen `Config` dataclass and `stages(cfg) -> list[Stage]`."""

from __future__ import annotations

import importlib
from types import ModuleType

from pipelines.errors import ConfigError

RECIPES = ("ultrachat", "ultrafeedback", "self_instruct", "orca", "ingest", "dedup")


def load_recipe(name: str) -> ModuleType:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; available recipes: {', '.join(RECIPES)}")
    return importlib.import_module(f"pipelines.recipes.{name}")
