"""The recipe contract: a `Recipe` says everything the build, refresh and the card need to know about a recipe.

A recipe module under `pipelines/recipes/` defines a frozen config dataclass and one `RECIPE = Recipe(...)`; the
registry (`pipelines.recipes`) finds it by module name. Nothing else in the tree knows a recipe by name.

- `config`: the frozen dataclass of its settings (`--set key=val`, `--show-config`; see `pipelines.core.config`).
- `stages(cfg)`: its stages in order, each a `pipelines.core.stage.Stage`.
- `roles`: the config fields holding a `TeacherConfig`: `"teacher"`, `"judge"` for a judging recipe (and
  `"second_judge"` for one that can ask a second), `"embedder"` for one that embeds (a stage talks to the client
  of its `teacher_role`; an unset judge falls back to the teacher).
- `inputs(cfg)`: the files it reads, as `Inputs` (listed with hashes and licenses in the card; refresh compares
  `sources` between versions).
- `card`: the template under `data_cards/` (or the path of one) and `card_values(cfg, run)`, the values only this
  recipe's card shows, read from the finished run (`FinishedRun`: its export and its stages' summaries). The
  build renders the card after the run; export stages write data only.
- `refresh`: None when the recipe cannot be refreshed; else a `Refresh` with the `--set` overrides that apply from
  version 2 on. A refreshable config has `sources` and `index` fields (checked when the recipe is made).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pipelines.core.errors import ConfigError


@dataclass(frozen=True)
class Inputs:
    """The files a config names, by role. `built_in` are paths under `pipelines/` (the project's own data)."""

    sources: tuple[str, ...] = ()
    seeds: tuple[str, ...] = ()
    benchmarks: tuple[str, ...] = ()
    built_in: tuple[str, ...] = ()


@dataclass(frozen=True)
class FinishedRun:
    """What a recipe's `card_values` may read of a finished run."""

    export_dir: Path  # the export: data/<split>-*.parquet
    summaries: dict  # the stages' summaries, {section: {"stage": name, **values}} (`Stage.summary`)


@dataclass(frozen=True)
class Refresh:
    """How `pipelines.refresh` makes later versions: `later` are `--set` overrides applied from version 2 on."""

    later: tuple[str, ...] = ()


def no_inputs(cfg: Any) -> Inputs:
    return Inputs()


def no_card_values(cfg: Any, run: FinishedRun) -> dict:
    return {}


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str  # one line for --help
    config: type
    stages: Callable[[Any], list]
    card: str  # data_cards/<card>.md
    roles: tuple[str, ...] = ()
    inputs: Callable[[Any], Inputs] = no_inputs
    card_values: Callable[[Any, Any], dict] = no_card_values
    refresh: Refresh | None = None

    def __post_init__(self):
        names = {f.name for f in dataclasses.fields(self.config)}
        missing = [r for r in self.roles if r not in names]
        if missing:
            raise ConfigError(f"recipe {self.name}: roles {missing} are not fields of {self.config.__name__}")
        if self.refresh is not None and not {"sources", "index"} <= names:
            raise ConfigError(f"recipe {self.name}: a refreshable recipe needs `sources` and `index` settings")

    def clients(self, cfg: Any) -> dict[str, Any]:
        """The TeacherConfig of each role; a judge (or second judge) unset or equal to a role before it is left out,
        and that role serves it (`pipelines.teacher.stage.FALLBACKS`): one client, one server."""
        out = {}
        for role in self.roles:
            value = getattr(cfg, role)
            if value is not None and (role in ("teacher", "embedder") or value not in out.values()):
                out[role] = value
        return out
