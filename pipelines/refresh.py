"""`python -m pipelines.refresh RECIPE [--set key=val ...] [--root DIR] [--dry-run]`: make the next version from
only the inputs no earlier version consumed.

Layout of a refresh root (default `refresh/<recipe>/`):
- `manifest.json`: the `overrides` the refresh runs with (saved on first use, so cron needs no arguments) and
  `versions`: per version its `inputs` (path, size, sha256, license), `counts` per split, `files`, rows added,
  drops by reason, requests and tokens. A version being built is `pending` (a killed refresh resumes it).
- `index/`: the near-duplicate index of every row of every version: new rows are deduplicated against it.
- `work/vN/`: the build of version N (`python -m pipelines.build` under the hood, so it resumes after a kill).
- `versions/vN/data/<split>-vNNNN-*.parquet`: the rows new in version N; `versions/vN/README.md`: the card of the
  dataset as of N (every version's shards; its YAML's `data/<split>-*` globs take them all).
- `dataset/`: every version's shards (hard links) and the latest card: the dataset to load locally.
- `CHANGELOG.md`: one entry per version, newest first; the card repeats it.
- `refresh.lock`: held (flock) while a refresh runs; a second one exits at once with code 75 (EX_TEMPFAIL).

An input is new when no earlier version consumed a file with the same content (sha256), wherever it lies; a changed
file is new as a whole, and its rows that earlier versions already hold are dropped by dedup. No new input: no
build, no request, no version (exit 0). The recipe must read its inputs from `sources` and have an `index`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlencode

import pyarrow.parquet as pq

from connectors.licenses import combined_license
from connectors.sources import SourceSpec
from pipelines import __version__
from pipelines.build import build
from pipelines.build import make_parser as build_parser
from pipelines.cli import Parser, main_guard, recipe_arguments, recipes_epilog
from pipelines.core.config import apply_overrides
from pipelines.core.errors import ConfigError, PipelineError
from pipelines.core.files import write_json
from pipelines.release.cards import render_again
from pipelines.core.locks import LOCKED, DirLock  # noqa: F401 (LOCKED: the exit code, for callers)
from pipelines.recipes import load_recipe, names
from pipelines.release.lineage import InputFile, describe, input_files, sha256_file


def make_parser() -> Parser:
    p = Parser(prog="pipelines.refresh", description="Make the next version of a dataset from new inputs only.",
               epilog=recipes_epilog(refreshable=True), formatter_class=argparse.RawDescriptionHelpFormatter)
    recipe_arguments(p, "config overrides, as for pipelines.build; saved, and reused when none are given")
    p.add_argument("--root", type=Path, default=None, help="refresh directory (default refresh/<recipe>)")
    p.add_argument("--dry-run", action="store_true", help="print what would be processed, change nothing")
    p.add_argument("--engine", choices=("local", "ray"), default="local", help="as for pipelines.build")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    return p


class Manifest:
    def __init__(self, root: Path):
        self.path = root / "manifest.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {"versions": []}

    @property
    def versions(self) -> list[dict]:
        return self.data["versions"]

    def consumed(self) -> set[str]:
        return {f["sha256"] for v in self.versions for f in v["inputs"]} | set(self.data.get("empty_inputs", []))

    def save(self) -> None:
        write_json(self.path, self.data)


def refresh(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe)
    root = args.root or Path("refresh") / args.recipe
    manifest = Manifest(root)
    overrides = [s for group in args.overrides for s in group.split()] or manifest.data.get("overrides", [])
    if recipe.refresh is None:
        refreshable = ", ".join(r for r in names() if load_recipe(r).refresh is not None)
        raise ConfigError(f"recipe {args.recipe} cannot be refreshed: it reads no new sources into a persistent "
                          f"index (refreshable: {refreshable})")
    cfg = apply_overrides(recipe.config(), overrides)
    if args.dry_run:
        number, new, built_in_only = _plan(manifest, recipe, cfg, None)
        return _dry_run(root, number, new, manifest, built_in_only)
    root.mkdir(parents=True, exist_ok=True)
    # before anything else, so a second refresh exits at once
    with DirLock(root / "refresh.lock", f"refresh of {args.recipe}"):
        manifest = Manifest(root)
        number, new, built_in_only = _plan(manifest, recipe, cfg, root / "inputs.json")
        if not new and not built_in_only:
            print(f"refresh {args.recipe}: no new input ({len(manifest.consumed())} inputs already in "
                  f"v1..v{len(manifest.versions)}); no version made")
            return 0
        manifest.data["recipe"] = args.recipe
        manifest.data["overrides"] = overrides
        manifest.data["pending"] = {"version": number, "inputs": [asdict(f) for f in new]}
        manifest.save()
        run_dir = root / "work" / f"v{number}"
        run_dir.mkdir(parents=True, exist_ok=True)
        if (root / "inputs.json").exists():  # the card hashes the inputs again: from this cache, not the files
            shutil.copy2(root / "inputs.json", run_dir / "inputs.json")
        sets = [*overrides, f"index={(root / 'index').resolve()}"]
        if new or cfg.sources:
            sets.append("sources=" + ",".join(_spec_for(f) for f in new))
        if number > 1:
            sets += recipe.refresh.later
        try:
            build(build_parser().parse_args([args.recipe, "--run-dir", str(run_dir), "--engine", args.engine,
                                             *(x for s in sets for x in ("--set", s))]))
        except PipelineError:  # a user error (bad input, bad config): the next run starts from its own inputs
            del manifest.data["pending"]
            manifest.save()
            raise
        entry = _record(root, run_dir, number, new)
        if entry is None:
            manifest.data.setdefault("empty_inputs", []).extend(f.sha256 for f in new)
            print(f"refresh {args.recipe}: {len(new)} new inputs gave no new row; no version made")
        else:
            manifest.versions.append(entry)
            _publish_locally(root, manifest, run_dir)
            print(f"refresh {args.recipe}: v{number} adds {entry['rows_added']} rows "
                  f"({', '.join(f'{s}: {n}' for s, n in entry['counts'].items())}) -> {root / 'dataset'}")
        del manifest.data["pending"]
        manifest.save()
    return 0


def _plan(manifest: Manifest, recipe, cfg, hash_cache: Path | None) -> tuple[int, list[InputFile], bool]:
    """(the version to make, its new inputs, whether it is v1 of a recipe reading only its built-in data)."""
    pending = _still_pending(manifest)
    if pending:
        return pending["version"], [InputFile(**f) for f in pending["inputs"]], not pending["inputs"]
    files = describe(input_files(recipe, cfg), hash_cache)
    seen = manifest.consumed()
    new = {f.sha256: f for f in files if f.role == "source" and f.sha256 not in seen}  # one copy of a file found twice
    number = len(manifest.versions) + 1
    return number, list(new.values()), number == 1 and not cfg.sources


def _still_pending(manifest: Manifest) -> dict | None:
    """The version a killed refresh left unfinished, unless one of its inputs changed or went away since."""
    pending = manifest.data.get("pending")
    if not pending:
        return None
    for f in pending["inputs"]:
        path = Path(f["path"])
        if not path.is_file() or path.stat().st_size != f["size"] or sha256_file(path) != f["sha256"]:
            print(f"refresh: {path} changed since v{pending['version']} was started; its inputs are taken anew")
            return None
    return pending


def _spec_for(f: InputFile) -> str:
    """The file as a source spec, with the options (format, weight, ...) of the spec that named it."""
    spec = SourceSpec.parse(f.spec)
    options = {k: v for k, v in (("format", spec.format), ("weight", spec.weight if spec.weight != 1 else None),
                                 ("max_rows", spec.max_rows), ("license", f.license)) if v is not None}
    return f.path + (f"?{urlencode(options)}" if options else "")


def _record(root: Path, run_dir: Path, number: int, new: list[InputFile]) -> dict | None:
    """Copy the build's export into `versions/vN` as version-named shards; the version's manifest entry."""
    report = json.loads((run_dir / "report.json").read_text())
    shards = sorted((run_dir / "export" / "data").glob("*.parquet"))
    counts: Counter = Counter()
    out = root / "versions" / f"v{number}"
    shutil.rmtree(out, ignore_errors=True)
    (out / "data").mkdir(parents=True)
    files = []
    for shard in shards:
        split, rest = shard.name.split("-", 1)
        rows = pq.read_metadata(shard).num_rows
        if not rows:
            continue
        counts[split] += rows
        name = f"data/{split}-v{number:04d}-{rest}"
        shutil.copy2(shard, out / name)
        files.append(name)
    if not files:
        shutil.rmtree(out)
        return None
    for picture in sorted((run_dir / "export" / "pictures").glob("*.png")):  # the card links them
        (out / "pictures").mkdir(exist_ok=True)
        shutil.copy2(picture, out / "pictures" / picture.name)
        files.append(f"pictures/{picture.name}")
    dropped: Counter = Counter()
    for stage in report["stages"]:
        dropped.update(stage["dropped"])
    spent = report["this_run"]
    licenses = json.loads((run_dir / "card.json").read_text())["licenses"]
    return {
        "version": number, "tag": f"v{number}", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "library": __version__, "inputs": [asdict(f) for f in new], "counts": dict(counts), "files": files,
        "rows_added": sum(counts.values()), "dropped": dict(dropped), "licenses": licenses,
        **{k: spent.get(k, 0) for k in ("requests", "cache_hits", "tokens_in", "tokens_out", "cost")},
        "work": str(run_dir),
    }


def _publish_locally(root: Path, manifest: Manifest, run_dir: Path) -> None:
    """Write CHANGELOG.md, `dataset/` (all shards + card) and the new version's card."""
    changelog = "# Changelog\n\n" + "\n".join(_entry(v) for v in reversed(manifest.versions))
    (root / "CHANGELOG.md").write_text(changelog)
    dataset = root / "dataset"
    tmp = root / "dataset.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    totals: Counter = Counter()
    for v in manifest.versions:
        totals.update(v["counts"])
        for name in v["files"]:
            if name.startswith("pictures/") and v is not manifest.versions[-1]:
                continue  # the pictures of the latest build only: its card links them
            (tmp / name).parent.mkdir(exist_ok=True)
            os.link(root / "versions" / f"v{v['version']}" / name, tmp / name)
    latest = manifest.versions[-1]
    release = (f"Version **{latest['tag']}**, made {latest['created']} by `python -m pipelines.refresh` (convoforge "
               f"{latest['library']}); it added {latest['rows_added']} rows. Each version's rows are in "
               f"`data/<split>-vNNNN-*.parquet`; the Hub tag `vN` holds the dataset as of version N.\n\n"
               + changelog.replace("# Changelog\n", "").replace("\n## ", "\n### "))
    licenses = [x for v in manifest.versions for x in v.get("licenses", [])]
    render_again(run_dir, tmp, dict(totals), release, combined_license(licenses))
    shutil.copy2(tmp / "README.md", root / "versions" / latest["tag"] / "README.md")
    shutil.rmtree(dataset, ignore_errors=True)
    os.replace(tmp, dataset)
    for older in manifest.versions[:-1]:  # keep what tells how an older version was made, not its stage parts
        for stage_dir in (root / "work" / older["tag"]).glob("[0-9][0-9]_*"):
            shutil.rmtree(stage_dir)


def _entry(v: dict) -> str:
    inputs = "\n".join(f"  - `{Path(f['path']).name}` ({f['size']} bytes, sha256 `{f['sha256'][:16]}`, license "
                       f"{f['license'] or 'unknown'})" for f in v["inputs"]) or "  - none (built-in data)"
    drops = ", ".join(f"{k}: {n}" for k, n in sorted(v["dropped"].items())) or "none"
    return (f"## {v['tag']} ({v['created']})\n\n"
            f"- Rows added: {v['rows_added']} ({', '.join(f'{s}: {n}' for s, n in v['counts'].items())})\n"
            f"- Dropped: {drops}\n"
            f"- Teacher: {v['requests']} requests ({v['cache_hits']} from cache), tokens in/out "
            f"{v['tokens_in']}/{v['tokens_out']}\n"
            f"- New inputs:\n{inputs}\n")


def _dry_run(root: Path, number: int, new: list[InputFile], manifest: Manifest, built_in: bool) -> int:
    print(f"refresh root: {root}; versions so far: {len(manifest.versions)}; inputs consumed: "
          f"{len(manifest.consumed())}")
    if not new and number > 1:
        print("no new input: nothing would be processed, no version made")
        return 0
    print(f"would make v{number} from {len(new)} new input(s)" + (" and the recipe's built-in data" if built_in
                                                                   else "") + ":")
    for f in new:
        print(f"  {f.path}  {f.size} bytes  sha256 {f.sha256[:16]}  license {f.license or 'unknown'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return main_guard(lambda a: refresh(make_parser().parse_args(a)), sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
