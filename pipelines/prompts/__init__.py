"""Teacher-facing text as data: every sentence a teacher or judge is shown lives in a YAML file of this folder.

`load("ultrachat")` returns `ultrachat.yaml` parsed (cached); `fill(template, **values)` fills its `{name}` fields
(`str.format`: a value is never parsed again, so a `{` in a user's text is safe). The modules beside the files
(`ultrachat.py`, `ultrafeedback.py`, `self_instruct.py`) build requests from them and parse the answers; they hold no
prose. A stage names its files in `prompt_files` (`"prompts/ultrachat.yaml"`, relative to `pipelines/`), and cards
hash those files, so a card's prompt hash changes when what the teacher reads changes, not when code does.
A recipe outside this tree may name a file by absolute path.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

FOLDER = Path(__file__).resolve().parent


def file_of(name: str) -> Path:
    """`"ultrachat"` -> this folder's `ultrachat.yaml`; a path ending in .yaml is taken as it is."""
    return Path(name) if name.endswith(".yaml") else FOLDER / f"{name}.yaml"


@cache
def load(name: str) -> dict:
    with open(file_of(name), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def fill(template: str, **values) -> str:
    return template.format(**values)
