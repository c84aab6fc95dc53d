"""Tools a model calls: OpenAI function definitions with implementations, run in a sandbox.

- `library/`: the shipped tools, one file per domain (arithmetic and units, dates, a shop database, country facts,
  text), deterministic and over shipped data, so a build needs nothing outside;
- `validate.py`: a call's arguments checked as data against the tool's JSON Schema;
- `sandbox.py` / `worker.py`: the calls run in a separate, limited process.
A tools file (the library's or a user's) is a Python file with `TOOLS`, a list of OpenAI function definitions, and a
function of each name; a definition with `"simulated": true` has no function (the teacher plays the tool).
"""

from pathlib import Path

LIBRARY = Path(__file__).with_name("library")


def library_files() -> dict[str, Path]:
    """The shipped tools files by domain: {"math_units": Path, ...}."""
    return {p.stem: p for p in sorted(LIBRARY.glob("*.py")) if not p.name.startswith("_")}
