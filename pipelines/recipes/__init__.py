"""The recipe registry: every module of this package that defines `RECIPE` (a `pipelines.core.recipe.Recipe`), and
every module in the folders named by `PIPELINES_RECIPE_PATH` (separated like PATH), for recipes kept outside this
tree. A recipe's name is its module's name.

A new recipe is one module (its config dataclass, `stages(cfg)` and `RECIPE = Recipe(...)`), a card template and,
for a teacher stage, a prompt file (docs/architecture.md); nothing else lists recipes.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from pipelines.core.errors import ConfigError
from pipelines.core.plugins import import_file, user_modules
from pipelines.core.recipe import Recipe


def _modules() -> dict[str, str | Path]:
    """name -> module name (built in) or file (from PIPELINES_RECIPE_PATH); a built-in name cannot be shadowed."""
    found: dict[str, str | Path] = dict(user_modules("PIPELINES_RECIPE_PATH"))
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            found[module.name] = f"{__name__}.{module.name}"
    return dict(sorted(found.items()))


def names() -> tuple[str, ...]:
    return tuple(_modules())


def load_recipe(name: str) -> Recipe:
    where = _modules().get(name)
    if where is None:
        raise ConfigError(f"unknown recipe {name!r}; available recipes: {', '.join(names())}")
    module = (importlib.import_module(where) if isinstance(where, str)
              else import_file(f"pipelines_recipe_{name}", where))
    recipe = getattr(module, "RECIPE", None)
    if not isinstance(recipe, Recipe) or recipe.name != name:
        raise ConfigError(f"{getattr(module, '__file__', where)} must define RECIPE = Recipe(name={name!r}, ...)")
    return recipe
