"""Dataset cards: render `data_cards/<template>.md` (string.Template, `$name` placeholders) into export/README.md.

The YAML header lists each split's files under `configs`, so `datasets.load_dataset(export_dir)` and the Hub viewer
find them; the body gives per-stage counts (read from each finished stage's `_SUCCESS.json`) and the config.
Only the names of environment variables appear, never their values.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from string import Template

from pipelines import __version__
from pipelines.config import to_json
from pipelines.dedup.summary import markdown as dedup_markdown
from pipelines.errors import ConfigError

TEMPLATES = Path(__file__).resolve().parent.parent / "data_cards"


def size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "n>1M"


def stage_table(run_dir: Path) -> str:
    lines = []
    for success in sorted(run_dir.glob("*/_SUCCESS.json")):
        row = json.loads(success.read_text())
        drops = ", ".join(f"{k}: {v}" for k, v in sorted(row["dropped"].items())) or "-"
        lines.append(f"| {row['stage']} | {row['rows_in']} | {drops} | {row['rows_out']} |")
    return "\n".join(lines)


def write_card(template: str, out_dir: Path, ctx, counts: dict[str, int], extra: dict | None = None) -> Path:
    path = TEMPLATES / f"{template}.md"
    if not path.exists():
        raise ConfigError(f"no card template {path}; add data_cards/{template}.md")
    cfg = ctx.config
    teacher = getattr(cfg, "teacher", None)
    judge = getattr(cfg, "judge", None)
    values = {
        "title": f"{cfg.name} (convoforge {cfg.recipe})",
        "recipe": cfg.recipe,
        "version": __version__,
        "size_category": size_category(sum(counts.values())),
        "data_files": "\n".join(f"  - split: {s}\n    path: data/{s}-*" for s in counts),
        "split_table": "\n".join(f"| {s} | {n} |" for s, n in counts.items()),
        "stage_table": stage_table(ctx.run_dir),
        "dedup": dedup_markdown(ctx.run_dir),
        "config": to_json(cfg),
        **({"teacher_model": teacher.model, "teacher_endpoint": endpoint(teacher)} if teacher else {}),
        **({"judge_model": judge.model, "judge_endpoint": endpoint(judge)} if judge else {}),
        **flat(cfg),
        **(extra or {}),
    }
    text = Template(path.read_text()).safe_substitute(values)
    target = out_dir / "README.md"
    target.write_text(text)
    return target


def endpoint(teacher) -> str:
    return teacher.base_url or "embedded transformers serve (127.0.0.1)"


def flat(cfg) -> dict:
    """Top-level scalar config values as strings, plus `sampling` rendered compactly."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            if f.name == "sampling":
                out["sampling"] = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(value).items())
            continue
        out[f.name] = ", ".join(map(str, value)) if isinstance(value, tuple) else str(value)
    if "sources" in out:
        out["materials"] = out["sources"] or "excerpts of the Python documentation (pydoc_data)"
        out["prompt_source"] = out["sources"] or "the project's shipped prompt set (pipelines/data)"
    return out
