"""Licenses as the Hub names them, and where to find the license of an input file.

A file's license comes from, in order: the source's `?license=` option (checked here); a Hub-style `README.md`
(YAML `license:`) in its folder or the two above; a `README.md` table row naming the file with a license column
(like `shared/data/README.md`); a `LICENSE` file beside it. Unknown stays unknown.
"""

from __future__ import annotations

import re
from pathlib import Path

BUILT_IN_LICENSE = "apache-2.0"  # the project's own prompts, seeds and topics (pipelines/data/README.md)
# Hub license ids (https://huggingface.co/docs/hub/repositories-licenses); the YAML header may use only these.
HUB_LICENSES = frozenset("""
apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m
afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5
cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0
cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0
cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl
lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl
openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license
fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2 llama3.3 llama4 gemma unknown other
""".split())
LICENSE_TEXTS = (  # first lines of common LICENSE files -> Hub id
    (re.compile(r"apache license,?\s+version 2\.0", re.I), "apache-2.0"),
    (re.compile(r"\bmit license\b|permission is hereby granted, free of charge", re.I), "mit"),
    (re.compile(r"creative commons attribution[- ]noncommercial[- ]sharealike 4\.0", re.I), "cc-by-nc-sa-4.0"),
    (re.compile(r"creative commons attribution[- ]noncommercial 4\.0", re.I), "cc-by-nc-4.0"),
    (re.compile(r"creative commons attribution[- ]sharealike 4\.0", re.I), "cc-by-sa-4.0"),
    (re.compile(r"creative commons attribution 4\.0", re.I), "cc-by-4.0"),
    (re.compile(r"\bcc0\b", re.I), "cc0-1.0"),
)
YAML_LICENSE = re.compile(r"^license:\s*(\S+)\s*$", re.M)


def hub_license(name: str) -> str | None:
    """`"Apache-2.0"` -> `"apache-2.0"`; None when the Hub has no such id."""
    name = name.strip().strip("'\"").lower()
    return name if name in HUB_LICENSES else None


def license_of(path: Path) -> str | None:
    """The license a file's folder declares, if any (see the module docstring for where it looks)."""
    path = Path(path).resolve()
    for folder in list(path.parents)[:3]:
        readme = folder / "README.md"
        if readme.is_file():
            text = readme.read_text(errors="replace")
            if text.startswith("---") and (match := YAML_LICENSE.search(text.split("---", 2)[1])):
                return hub_license(match.group(1))
            if found := _license_in_table(text, path.name):
                return found
        for name in ("LICENSE", "LICENSE.txt", "LICENSE.md", "COPYING"):
            if folder == path.parent and (folder / name).is_file():
                head = (folder / name).read_text(errors="replace")[:2000]
                return next((hub for pattern, hub in LICENSE_TEXTS if pattern.search(head)), None)
    return None


def _license_in_table(text: str, file_name: str) -> str | None:
    """A Markdown table with a `license` column and a row naming the file (like `shared/data/README.md`)."""
    header = None
    for line in text.splitlines():
        if not line.lstrip().startswith("|"):
            header = None
            continue
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
        elif "license" in header and any(c == file_name or c.endswith("/" + file_name) for c in cells):
            return hub_license(cells[header.index("license")]) if len(cells) > header.index("license") else None
    return None


def combined_license(licenses: list[str | None]) -> list[str]:
    """The Hub ids a dataset made of these inputs carries: every known one, plus `unknown` if any is unknown."""
    known = sorted({x for x in licenses if x})
    return known + (["unknown"] if any(x is None for x in licenses) or not licenses else [])
