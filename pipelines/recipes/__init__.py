"""The recipe registry: every module of this package that defines `RECIPE` (a `pipelines.core.recipe.Recipe`).

A new recipe is one module here (its config dataclass, `stages(cfg)` and `RECIPE = Recipe(...)`), a card template
under `data_cards/`, and its prompt files under `pipelines/prompts/`; nothing else lists recipes.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from pipelines.core.errors import ConfigError
from pipelines.core.recipe import Recipe


@cache
def names() -> tuple[str, ...]:
    """Every recipe's name, in module order."""
    return tuple(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def load_recipe(name: str) -> Recipe:
    if name not in names():
        raise ConfigError(f"unknown recipe {name!r}; available recipes: {', '.join(names())}")
    recipe = importlib.import_module(f"{__name__}.{name}").RECIPE
    if recipe.name != name:
        raise ConfigError(f"pipelines/recipes/{name}.py defines the recipe {recipe.name!r}: name them alike")
    return recipe
