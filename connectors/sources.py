"""Source specs: `PATH[?format=NAME&weight=W&max_rows=N&license=ID]`, one per entry of `--set sources=a,b,...`.

- PATH: a file, a directory, or a glob (`data/**/*.jsonl.gz`).
- `format`: skip auto-detection (see `connectors.detect.FORMATS` for the names).
- `weight`: the fraction of the source's records to keep (0 < w <= 1), chosen by a hash of the record id, so
  the same records are kept on every run and a growing file keeps its earlier picks.
- `max_rows`: keep at most this many records from the source (after weighting), in file order.
- `license`: the source's license as a Hub id (`mit`, `cc-by-4.0`), for the card; otherwise `pipelines.release.lineage`
  looks for one beside the file.

Mixtures are then just lists: `sources=alpaca.json?weight=0.5,sharegpt.jsonl?max_rows=20000,hh.jsonl.gz`, each
row's `source` saying where it came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from connectors.errors import ConfigError
from connectors.licenses import hub_license
from connectors.walk import data_files, expand

KEYS = "format|weight|max_rows|license"
OPTION = re.compile(rf"^(.*)\?((?:{KEYS})=[^&]*(?:&(?:{KEYS})=[^&]*)*)$")


@dataclass(frozen=True)
class SourceSpec:
    path: str
    format: str | None = None
    weight: float = 1.0
    max_rows: int | None = None
    license: str | None = None

    @classmethod
    def parse(cls, text: str) -> "SourceSpec":
        match = OPTION.match(text.strip())
        if not match:
            if "?" in text and "=" in text.rsplit("?", 1)[1]:
                raise ConfigError(f"source {text!r}: options are format=, weight=, max_rows= and license=, joined by &")
            return cls(text.strip())
        path, options = match.group(1), dict(parse_qsl(match.group(2), keep_blank_values=True))
        try:
            weight = float(options.get("weight", 1.0))
            max_rows = int(options["max_rows"]) if "max_rows" in options else None
        except ValueError as exc:
            raise ConfigError(f"source {text!r}: {exc}") from None
        if not 0 < weight <= 1:
            raise ConfigError(f"source {text!r}: weight is the fraction of records kept, between 0 and 1")
        if max_rows is not None and max_rows < 0:
            raise ConfigError(f"source {text!r}: max_rows must be 0 or more")
        license = options.get("license") or None
        if license is not None and hub_license(license) is None:
            raise ConfigError(f"source {text!r}: license {license!r} is not a Hub license id (apache-2.0, mit, "
                              "cc-by-4.0, ..., other, unknown)")
        return cls(path, options.get("format") or None, weight, max_rows, license and hub_license(license))

    def files_identity(self) -> list[tuple[str, int, int]]:
        """(path, size, mtime) of every file the spec names: part of the ingest fingerprint."""
        out = []
        for path in expand(self.path):
            out += [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in data_files(path)]
        return out
