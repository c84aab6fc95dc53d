"""`python -m pipelines.publish RECIPE --repo ORG/NAME [--root DIR] [--dry-run] [--private]`: push refresh versions
to a Hugging Face dataset repo. `python -m pipelines.publish MODEL_DIR --repo ORG/NAME [--gguf]`: push a trained
model directory to a model repo (see `publish_model`).

Reads `<root>/manifest.json` (root: `refresh/<recipe>/`, written by `python -m pipelines.refresh RECIPE`). The repo's
tags say what is already there: each version whose tag `vN` is missing is published, oldest first, as one commit that
adds `versions/vN/data/*` as `data/*` (only that version's new rows) and `versions/vN/README.md` as `README.md`, and
the tag `vN` on that commit. Earlier shards stay, so the repo at tag `vN` loads every row up to version N, like
`<root>/dataset/`. A rerun after an interruption publishes what is still missing; nothing new exits 0.

The token is the one huggingface_hub finds (`HF_TOKEN`, else `hf auth login`); it is never printed.
`--dry-run` makes no network call, so it cannot know the repo's tags: it lists every version of the manifest (files
with sizes, commit message, tag); a real run uploads only those whose tag is missing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from pipelines.cli import Parser, main_guard
from pipelines.core.errors import ConfigError, PipelineError

REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


def make_parser() -> Parser:
    p = Parser(prog="pipelines.publish", description="Publish refresh versions to a Hugging Face dataset repo.")
    p.add_argument("recipe", metavar="RECIPE|MODEL_DIR",
                   help="the recipe refreshed with python -m pipelines.refresh RECIPE, or a trained model directory")
    p.add_argument("--repo", required=True, metavar="ORG/NAME", help="the dataset or model repo (created if missing)")
    p.add_argument("--root", type=Path, default=None, help="the refresh root (default refresh/<recipe>)")
    p.add_argument("--dry-run", action="store_true", help="list what would be uploaded, without any network call")
    p.add_argument("--private", action="store_true", help="create the repo private (an existing repo is unchanged)")
    p.add_argument("--gguf", action="store_true", help="a model: also upload its gguf/model-*.gguf exports")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def human(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000


def load_versions(root: Path, recipe: str) -> list[dict]:
    """The manifest's versions, oldest first, each with `uploads`: [(local path, path in repo)]; checks the files."""
    manifest = root / "manifest.json"
    try:
        data = json.loads(manifest.read_text())
    except FileNotFoundError:
        data = {}
    except (OSError, ValueError) as exc:
        raise PipelineError(f"cannot read {manifest}: {exc}") from exc
    try:
        versions = sorted(data.get("versions") or [], key=lambda v: int(v["version"]))
        for entry in versions:
            entry["version"] = int(entry["version"])
            entry.setdefault("tag", f"v{entry['version']}")
            entry["counts"] = {str(split): int(rows) for split, rows in entry["counts"].items()}
            base = root / "versions" / entry["tag"]
            entry["uploads"] = [(base / f, f if f.startswith("pictures/") else f"data/{Path(f).name}")
                                for f in entry["files"]] + [
                (base / "README.md", "README.md")]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise PipelineError(f"{manifest} is malformed ({exc!r}); rerun python -m pipelines.refresh {recipe}") from exc
    if not manifest.exists():
        raise PipelineError(f"no versions under {root}; run python -m pipelines.refresh {recipe} first")
    if data.get("recipe") not in (None, recipe):
        raise ConfigError(f"{manifest} is for recipe {data['recipe']!r}, not {recipe!r}")
    for entry in versions:
        if missing := [str(local) for local, _ in entry["uploads"] if not local.is_file()]:
            raise PipelineError(f"{entry['tag']} is incomplete, missing {', '.join(missing)}; rerun the refresh")
    return versions


def commit_message(entry: dict) -> str:
    """`v2: +35 rows (train: 35) from 1 new input`, from the counts refresh recorded for the version."""
    counts, n = entry["counts"], len(entry.get("inputs") or [])
    splits = ", ".join(f"{split}: {rows}" for split, rows in counts.items())
    return (f"{entry['tag']}: +{sum(counts.values())} rows ({splits or 'none'}) "
            f"from {n} new input{'' if n == 1 else 's'}")


def dry_run(versions: list[dict], root: Path, repo: str) -> int:
    print(f"dry run, no network calls: all {len(versions)} versions of {root / 'manifest.json'} for {repo}; "
          "a real run uploads only those whose tag is missing on the Hub")
    for entry in versions:
        print(f"{entry['tag']}: commit {commit_message(entry)!r}, then tag {entry['tag']}")
        for local, in_repo in entry["uploads"]:
            print(f"  {local} -> {in_repo} ({human(local.stat().st_size)})")
    return 0


def publish(args: argparse.Namespace) -> int:
    if not REPO_ID.fullmatch(args.repo) or ".." in args.repo or "--" in args.repo or args.repo.endswith(".git"):
        raise ConfigError(f"--repo {args.repo!r} is not a repo id; give it as ORG/NAME (letters, digits, - _ .)")
    if is_model_dir(Path(args.recipe)):
        return _on_hub(args, lambda: publish_model(Path(args.recipe), args.repo, args.private, args.gguf,
                                                   args.dry_run))
    root = args.root or Path("refresh") / args.recipe
    versions = load_versions(root, args.recipe)
    if not versions:  # refreshed, but no run has kept a row yet: nothing to do, which a schedule must not flag
        print(f"nothing to publish yet: {root / 'manifest.json'} has no version")
        return 0
    if args.dry_run:
        return dry_run(versions, root, args.repo)
    return _on_hub(args, lambda: upload(versions, args.repo, args.private))


def _on_hub(args: argparse.Namespace, work) -> int:
    """Run `work` with a token; a Hub or connection error is one line."""
    from huggingface_hub import get_token

    if not args.dry_run and not get_token():
        raise PipelineError("no Hugging Face token: set HF_TOKEN to a token with write access (or run hf auth login)")
    try:
        return work()
    except PipelineError:
        raise
    except Exception as exc:  # HTTP and connection errors of huggingface_hub: one line, like every user error
        if args.debug:
            raise
        hint = ""
        if getattr(getattr(exc, "response", None), "status_code", None) in (401, 403):
            hint = "; check that the token has write access to the repo's namespace"
        raise PipelineError(f"publishing to {args.repo} failed: {type(exc).__name__}: {exc}{hint}") from exc


def upload(versions: list[dict], repo: str, private: bool) -> int:
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi()
    api.create_repo(repo, repo_type="dataset", exist_ok=True, private=True if private else None)
    on_hub = {tag.name for tag in api.list_repo_refs(repo, repo_type="dataset").tags}
    todo = [entry for entry in versions if entry["tag"] not in on_hub]
    if not todo:
        print(f"nothing new: {repo} already has {', '.join(v['tag'] for v in versions)}")
        return 0
    newest = max((v["version"] for v in versions if v["tag"] in on_hub), default=0)
    if todo[0]["version"] < newest:
        raise PipelineError(f"{repo} has v{newest} but not {todo[0]['tag']}; publishing it now would put an older "
                            "card on top; delete the later tags on the Hub or publish to a new repo")
    for entry in todo:
        message = commit_message(entry)
        operations = [CommitOperationAdd(path_in_repo=in_repo, path_or_fileobj=str(local))
                      for local, in_repo in entry["uploads"]]
        commit = api.create_commit(repo, operations, commit_message=message, repo_type="dataset")
        api.create_tag(repo, tag=entry["tag"], revision=commit.oid, repo_type="dataset",
                       tag_message=f"{message} (created {entry.get('created', '?')})")
        size = sum(local.stat().st_size for local, _ in entry["uploads"])
        print(f"published {entry['tag']} -> {api.endpoint}/datasets/{repo}/tree/{entry['tag']} "
              f"({len(entry['uploads'])} files, {human(size)})")
    return 0


def is_model_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in ("config.json", "adapter_config.json"))


def model_files(model_dir: Path, gguf: bool) -> list[tuple[Path, str]]:
    """(local file, path in repo): the directory's top-level files (weights, tokenizer, config, card, training and
    eval records), and with `gguf` its GGUF exports; never trainer checkpoints, locks or partial files."""
    files = [(f, f.name) for f in sorted(model_dir.iterdir())
             if f.is_file() and not f.name.startswith(".") and not f.name.endswith((".part", ".lock", ".tmp"))]
    if gguf:
        files += [(f, f"gguf/{f.name}") for f in sorted((model_dir / "gguf").glob("model-*.gguf"))]
    return files


def git_blob_oid(path: Path) -> str:
    """The git blob id the Hub reports for a file stored in git (not LFS)."""
    import hashlib

    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def publish_model(model_dir: Path, repo: str, private: bool, gguf: bool, dry: bool) -> int:
    """Push a trained model directory to a model repo as one commit: the card is written again first (base model,
    training lineage, datasets, eval results as model-index) and must load as a `ModelCard`. Files the repo already
    holds with the same content are not sent again; nothing changed exits 0 without a commit."""
    from huggingface_hub import CommitOperationAdd, HfApi, ModelCard

    from pipelines.release.lineage import sha256_file
    from pipelines.train.card import write_card
    from pipelines.train.export import check_checkpoint

    if (model_dir / "config.json").is_file():
        check_checkpoint(model_dir)
    if gguf and not any((model_dir / "gguf").glob("model-*.gguf")):
        raise ConfigError(f"{model_dir} has no gguf/model-*.gguf: run python -m pipelines.train export {model_dir}")
    ModelCard.load(write_card(model_dir))
    files = model_files(model_dir, gguf)
    if dry:
        print(f"dry run, no network calls: {model_dir} -> model repo {repo}")
        for local, in_repo in files:
            print(f"  {local} -> {in_repo} ({human(local.stat().st_size)})")
        return 0
    api = HfApi()
    api.create_repo(repo, repo_type="model", exist_ok=True, private=True if private else None)
    there = {}  # path in repo -> how to tell the local file is the same: (hash function, the Hub's hash)
    if any(ref.name == "main" for ref in api.list_repo_refs(repo).branches):
        there = {f.path: (sha256_file, f.lfs.sha256) if getattr(f, "lfs", None) else (git_blob_oid, f.blob_id)
                 for f in api.list_repo_tree(repo, recursive=True) if hasattr(f, "blob_id")}
    todo = [(local, in_repo) for local, in_repo in files
            if in_repo not in there or there[in_repo][0](local) != there[in_repo][1]]
    if not todo:
        print(f"nothing new: {repo} already holds these {len(files)} files")
        return 0
    commit = api.create_commit(repo, [CommitOperationAdd(path_in_repo=r, path_or_fileobj=str(f)) for f, r in todo],
                               commit_message=f"{model_dir.name}: {len(todo)} of {len(files)} files")
    print(f"published {model_dir} -> {api.endpoint}/{repo} ({len(todo)} files, "
          f"{human(sum(f.stat().st_size for f, _ in todo))}; commit {commit.oid[:10]})")
    return 0


def scrub(text: str) -> str:
    """The message without the token (in case a server echoes it back), on one line."""
    from huggingface_hub import get_token

    try:
        token = get_token()
    except Exception:  # an OIDC exchange that fails: there is no token to hide then
        token = None
    if token and len(token) >= 8:
        text = text.replace(token, "<HF_TOKEN>")
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    return main_guard(lambda a: publish(make_parser().parse_args(a)), sys.argv[1:] if argv is None else argv,
                      clean=lambda exc: scrub(str(exc)))


if __name__ == "__main__":
    sys.exit(main())
