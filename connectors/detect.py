"""Which format a file is in: the first readable record decides, by its keys (`?format=NAME` overrides).

Formats are tried from the most specific shape to the most general (UltraFeedback and Self-Instruct before Alpaca,
hh-rlhf before TRL preference, TRL shapes before plain `text`).
"""

from __future__ import annotations

import itertools
from types import ModuleType
from typing import Iterator

from connectors import (alpaca, dolly, glaive, helpsteer, hh_rlhf, lmsys, oasst, openai_messages, openorca, preference,
                        prompt_completion, qa, self_instruct, sharegpt, text, ultrachat, ultrafeedback, xlam)
from connectors.errors import SourceError
from connectors.streams import Raw

FORMATS: tuple[ModuleType, ...] = (
    oasst, ultrafeedback, helpsteer, hh_rlhf, preference, openai_messages, sharegpt, glaive, xlam, lmsys, ultrachat,
    openorca, self_instruct, dolly, alpaca, prompt_completion, qa, text,
)
BY_NAME = {f.NAME: f for f in FORMATS}


def kinds(fmt: ModuleType) -> tuple[str, ...]:
    return getattr(fmt, "KINDS", None) or (fmt.KIND,)


def by_name(name: str) -> ModuleType:
    if name not in BY_NAME:
        raise SourceError(f"unknown format {name!r}; formats: {', '.join(BY_NAME)}")
    return BY_NAME[name]


def detect(raws: Iterator[Raw], path) -> tuple[ModuleType | None, Iterator[Raw]]:
    """(format, the same records): reads ahead to the first readable record and puts it back.

    None when the file holds no readable record at all (its bad records still come through).
    """
    seen = []
    for raw in raws:
        seen.append(raw)
        if raw.record is not None:
            break
    rest = itertools.chain(seen, raws)
    if not seen or seen[-1].record is None:
        return None, rest
    first = seen[-1].record
    for fmt in FORMATS:
        if fmt.matches(first):
            return fmt, rest
    raise SourceError(f"cannot tell the format of {path} from its fields {sorted(first)[:12]}; name it with "
                      f"{path}?format=NAME, one of: {', '.join(BY_NAME)}")
