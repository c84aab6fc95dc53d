"""Dataset cards: render `data_cards/<template>.md` (string.Template, `$name` placeholders) into export/README.md.

The build calls `write_card(recipe, cfg, run_dir, stages)` after a run: the values every card has, each top-level
setting by its name, then the recipe's own `card_values(cfg, export_dir)`; the splits are the files in the export.

The YAML header lists each split's files under `configs`, so `datasets.load_dataset(export_dir)` and the Hub viewer
find them, and carries the license derived from the inputs (`connectors.licenses`), task categories and size
category. The body gives lineage: input files with hashes and licenses, per-stage counts (each finished stage's
`_SUCCESS.json`), dedup and decontamination, the teacher and judge with their parameters and prompt-file hashes,
the config, and the version with its changelog (`refresh` renders the card again for each version).

Every card is validated before it is written (`validate_card`): the YAML must parse as a `huggingface_hub`
DatasetCard and use only ids the Hub knows (licenses, task categories, size categories, languages), and every
split's `data_files` must match files beside it. Only the names of environment variables appear, never their values.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
from pathlib import Path
from string import Template
from urllib.parse import urlsplit, urlunsplit

import pyarrow.parquet as pq

from connectors.licenses import BUILT_IN_LICENSE, HUB_LICENSES, combined_license
from pipelines import __version__
from pipelines.core.config import to_json
from pipelines.core.errors import ConfigError, PipelineError
from pipelines.core.files import write_json, write_text
from pipelines.core.recipe import FinishedRun
from pipelines.dedup.summary import markdown as dedup_markdown
from pipelines.dedup.summary import sections
from pipelines.stages.labels import markdown as review_markdown
from pipelines.release.lineage import describe, input_files, prompt_hashes
from pipelines.release.pictures import draw

TEMPLATES = Path(__file__).resolve().parents[2] / "data_cards"
SIZE_LIMITS = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
               (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))
UNVERSIONED = "Built once with `python -m pipelines.build`; `python -m pipelines.refresh` makes numbered versions."


def template_file(card: str) -> Path:
    """A recipe's card: a name under data_cards/ (`ultrachat`), or the path of a `.md` file (a recipe kept
    elsewhere)."""
    return Path(card) if card.endswith(".md") else TEMPLATES / f"{card}.md"


class CardError(PipelineError):
    """A card the Hub would refuse or `datasets` could not load from."""


def size_category(n: int) -> str:
    return next((label for limit, label in SIZE_LIMITS if n < limit), "1B<n<10B")


def stage_table(rows: list[dict]) -> str:
    lines = []
    for row in rows:
        drops = ", ".join(f"{k}: {v}" for k, v in sorted(row["dropped"].items())) or "-"
        lines.append(f"| {row['stage']} | {row['rows_in']} | {drops} | {row['rows_out']} |")
    return "\n".join(lines)


SPLIT_ORDER = ("train", "prefs", "sft", "gen")  # kinds of split, in card order; train before test within each


def export_counts(export_dir: Path) -> dict[str, int]:
    """Rows per split of an export, from its `data/<split>-*.parquet` files, in card order."""
    counts: dict[str, int] = {}
    for path in sorted((export_dir / "data").glob("*.parquet")):
        split = path.name.split("-", 1)[0]
        counts[split] = counts.get(split, 0) + pq.read_metadata(path).num_rows
    kind = lambda s: (SPLIT_ORDER.index(s.rsplit("_", 1)[-1]) if s.rsplit("_", 1)[-1] in SPLIT_ORDER else 9,  # noqa
                      s.startswith("test"))
    return {s: counts[s] for s in sorted(counts, key=kind) if counts[s]}


def write_card(recipe, cfg, run_dir: Path, stages, rows: list[dict]) -> Path:
    """Render the card of a finished run (`rows`: the runner's, one per stage); its values are kept in
    `run_dir/card.json` for `render_again`."""
    path = template_file(recipe.card)
    if not path.exists():
        raise ConfigError(f"no card template {path} for recipe {recipe.name}: add it")
    clients = recipe.clients(cfg)
    teacher, judge = clients.get("teacher"), cfg.judge if "judge" in recipe.roles else None
    inputs = describe(input_files(recipe, cfg), run_dir / "inputs.json")
    licenses = [f.license for f in inputs if f.role != "benchmark"] + ([BUILT_IN_LICENSE] if teacher else [])
    out_dir = run_dir / "export"
    values = {
        "title": f"{cfg.name} (convoforge {recipe.name})",
        "recipe": recipe.name,
        "version": __version__,
        "license_yaml": yaml_list("license", combined_license(licenses)),
        "stage_table": stage_table(rows),
        "dedup": dedup_markdown(sections(rows)),
        "lineage": lineage_markdown(inputs, stages, clients),
        "config": to_json(cfg),
        "release": UNVERSIONED,
        **({"teacher_model": teacher.endpoints()[0].model, "teacher_endpoint": endpoint(teacher)} if teacher else {}),
        **({"judge_model": judge.endpoints()[0].model, "judge_endpoint": endpoint(judge)} if judge else {}),
        **flat(cfg, recipe.roles),
        **recipe.card_values(cfg, FinishedRun(out_dir, sections(rows))),
        "pictures": draw(out_dir, sections(rows)) + review_markdown(sections(rows).get("review", {})),
    }
    saved = {"template": recipe.card, "values": values, "licenses": licenses}
    write_json(run_dir / "card.json", saved, indent=1)
    return render(recipe.card, out_dir, values, export_counts(out_dir))


def render(template: str, out_dir: Path, values: dict, counts: dict[str, int]) -> Path:
    """Fill the template with `values` plus the split-dependent ones, validate, write `out_dir/README.md`."""
    values = {
        **values,
        "size_category": size_category(sum(counts.values())),
        "data_files": "\n".join(f"  - split: {s}\n    path: data/{s}-*" for s in counts),
        "split_table": "\n".join(f"| {s} | {n} |" for s, n in counts.items()),
    }
    text = Template(template_file(template).read_text()).safe_substitute(values)
    if values.get("pictures"):  # before the pipeline table, or at the end of a card without one
        at = text.find("\n## Pipeline")
        at = at + 1 if at >= 0 else len(text)
        text = text[:at] + values["pictures"] + "\n" + text[at:]
    problems = validate_card(text, out_dir)
    if problems:
        raise CardError(f"card {template_file(template)} for {out_dir} is not valid: {'; '.join(problems)}")
    return write_text(out_dir / "README.md", text)


def render_again(run_dir: Path, out_dir: Path, counts: dict[str, int], release: str, licenses: list[str]) -> Path:
    """The card of `run_dir`'s export for a dataset with other splits and licenses (all versions so far) and a
    release note."""
    saved = json.loads((run_dir / "card.json").read_text())
    values = {**saved["values"], "release": release, "license_yaml": yaml_list("license", licenses)}
    return render(saved["template"], out_dir, values, counts)


def validate_card(text: str, folder: Path) -> list[str]:
    """What the Hub's card validation and `datasets` would refuse in a card for the files under `folder`."""
    from datasets.utils.metadata import MetadataConfigs, known_task_ids
    from huggingface_hub import DatasetCard

    resources = Path(__import__("datasets").__file__).parent / "utils" / "resources"
    try:
        data = DatasetCard(text).data
        configs = MetadataConfigs.from_dataset_card_data(data)
    except Exception as exc:  # the YAML itself: a parse error or a malformed configs field
        return [f"YAML header: {exc}"]
    problems = []
    licenses = data.license if isinstance(data.license, list) else [data.license]
    problems += [f"license {x!r} is not a Hub license id" for x in licenses if x not in HUB_LICENSES]
    sizes = set(json.loads((resources / "size_categories.json").read_text()))
    languages = set(json.loads((resources / "languages.json").read_text()))
    for field, known in (("size_categories", sizes), ("task_categories", set(known_task_ids)),
                         ("language", languages)):
        values = getattr(data, field) or []
        if not values:
            problems.append(f"no {field}")
        problems += [f"{field} {x!r} is not one the Hub knows" for x in values if x not in known]
    if not configs:
        problems.append("no configs with data_files")
    for name, config in configs.items():
        for item in config.get("data_files") or []:
            paths = item["path"] if isinstance(item["path"], list) else [item["path"]]
            if not any(glob.glob(str(folder / p)) for p in paths):
                problems.append(f"config {name} split {item['split']}: no file matches {paths}")
    return problems


def yaml_list(key: str, items: list[str]) -> str:
    return f"{key}: {items[0]}" if len(items) == 1 else f"{key}:\n" + "\n".join(f"- {x}" for x in items)


def lineage_markdown(inputs, stages, clients: dict) -> str:
    """Input files with hashes and licenses, then every teacher stage with its model, parameters and prompts."""
    lines = ["| role | file | bytes | sha256 | license |", "|---|---|---|---|---|"]
    lines += [f"| {f.role} | `{f.spec if f.role == 'built-in' else Path(f.path).name}` | {f.size} | "
              f"`{f.sha256[:16]}` | {f.license or 'unknown'} |" for f in inputs] or ["| - | none | | | |"]
    models = prompt_hashes(stages)
    if models:
        lines += ["", "| stage | role | model | endpoint | parameters | prompt files (sha256) |",
                  "|---|---|---|---|---|---|"]
        by_name = {s.name: s for s in stages}
        for row in models:
            client = clients.get(row["role"]) or clients["teacher"]
            params = json.dumps(compact(by_name[row["stage"]].settings()), default=str).replace("|", "\\|")
            files = ", ".join(f"`{name}` `{digest[:12]}`" for name, digest in row["prompt_files"].items()) or "-"
            lines.append(f"| {row['stage']} | {row['role']} | `{client.endpoints()[0].model}` | {endpoint(client)} | "
                         f"`{params}` | {files} |")
    return "\n".join(lines)


def compact(value, limit: int = 4):
    """Settings for a table cell: a list longer than `limit` becomes its length and hash (seed tasks, shots)."""
    if isinstance(value, dict):
        return {k: compact(v, limit) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and len(value) > limit:
        digest = hashlib.sha256(json.dumps(value, default=str).encode()).hexdigest()[:12]
        return f"<{len(value)} items, sha256 {digest}>"
    return value


def endpoint(teacher) -> str:
    """The teacher's URL without any credentials in it, or the embedded server."""
    if not teacher.base_url:
        return f"the embedded server on 127.0.0.1 (engine {teacher.embedded.engine})"
    parts = urlsplit(teacher.base_url)
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""), query=""))


def flat(cfg, roles: tuple[str, ...]) -> dict:
    """Each top-level setting as a string by its name; a group of settings (sampling) as `key=value, ...`; the
    teacher roles are left out (the card shows their model and endpoint)."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in roles:
            continue
        if dataclasses.is_dataclass(value):
            out[f.name] = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(value).items())
        else:
            out[f.name] = ", ".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return out
