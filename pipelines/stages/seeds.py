"""UltraChat seeds: nothing -> seed_id, sector, seed, persona.

Three sectors as in UltraChat (Ding et al., 2023): questions about the world (seeded by topics), writing and
creation (by writing types), assistance on existing materials (by text passages). Topics, writing types and personas
are project-written (`pipelines/data/`); materials come from the standard library's documentation topics unless
`sources` names the user's own text files.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from importlib import resources

import polars as pl

from connectors.text import read_passages
from pipelines.core.errors import ConfigError, SourceError
from pipelines.core.stage import Context, Source
from pipelines.data.materials import passages_from_pydoc

SECTORS = ("world", "writing", "materials")


def load_list(name: str) -> list[str]:
    return json.loads(resources.files("pipelines.data").joinpath(name).read_text())


@dataclass
class SeedUltraChat(Source):
    n_dialogues: int
    seed: int = 0
    sources: tuple[str, ...] = ()
    sectors: tuple[str, ...] = SECTORS
    name = "seeds"
    provides = ("seed_id", "sector", "seed", "persona")

    def __post_init__(self):
        unknown = [s for s in self.sectors if s not in SECTORS]
        if unknown or not self.sectors:
            raise ConfigError(f"sectors {list(self.sectors)}: choose among {', '.join(SECTORS)}")

    def read(self, ctx: Context):
        rng = random.Random(self.seed)
        pools = {"world": load_list("topics.json"), "writing": load_list("writing_types.json"),
                 "materials": [p["text"] for p in self.materials(ctx)]}
        for pool in pools.values():
            rng.shuffle(pool)
        personas = load_list("personas.json")
        rows = []
        for n in range(self.n_dialogues):
            sector = self.sectors[n % len(self.sectors)]
            pool = pools[sector]
            seed = pool[(n // len(self.sectors)) % len(pool)]
            rows.append({
                "seed_id": hashlib.sha256(f"{self.seed}/{n}/{sector}/{seed}".encode()).hexdigest()[:16],
                "sector": sector, "seed": seed, "persona": rng.choice(personas),
            })
        yield pl.DataFrame(rows, schema={"seed_id": pl.String, "sector": pl.String, "seed": pl.String,
                                         "persona": pl.String})

    def materials(self, ctx: Context) -> list[dict]:
        if not self.sources:
            return passages_from_pydoc()
        problems: list[str] = []
        passages = [p for path in self.sources for p in read_passages(path, problems=problems)]
        if problems:  # counted in the report and named in the log, never skipped silently
            ctx.count("materials_lines_unusable", len(problems))
            ctx.log.warning("%d unusable lines in sources, first: %s", len(problems), problems[0])
        if not passages:
            raise SourceError(f"no usable text in {', '.join(self.sources)}; give .txt, .md or JSONL with 'text'")
        return passages
