"""Bundled data files (seed topics, personas, prompts, benchmark items; README.md says where each comes from) and
`materials.py`, which cuts passages from the standard library's documentation.

A layer beside `pipelines.core`: it may import `schemas` and `connectors`, and imports nothing else of `pipelines`.
"""

import json
from importlib import resources


def load_list(name: str) -> list:
    """A bundled JSON list (`personas.json`, `topics.json`, ...)."""
    return json.loads(resources.files(__name__).joinpath(name).read_text())
