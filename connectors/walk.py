"""Finding files: what a source names (a path, a directory or a glob) as a sorted list of data files.

A data file has one of SUFFIXES, maybe under a compression suffix (`a.jsonl.gz`); a `datasets` directory (from
`save_to_disk`) counts as one source wherever it is met. Directories are walked following symbolic links, each real
directory and file once, so link cycles cannot loop; a broken or looping link with a data suffix is a SourceError
naming it, not a file silently left out.
"""

from __future__ import annotations

import errno
import glob
import os
from pathlib import Path
from typing import Iterator

from connectors.errors import SourceError
from connectors.streams import DECOMPRESSORS

COMPRESSIONS = set(DECOMPRESSORS)
TEXT_SUFFIXES = {".jsonl", ".ndjson", ".json", ".csv", ".txt", ".md"}
COLUMNAR = {".parquet", ".arrow", ".feather", ".ipc"}
SUFFIXES = TEXT_SUFFIXES | COLUMNAR


def expand(spec: str | Path) -> list[Path]:
    """A path, a directory (every data file under it) or a glob -> files, sorted; SourceError if none.

    A `datasets` directory (from `save_to_disk`) counts as one source wherever it is met. Each real file is listed
    once however many links lead to it, under a path without symbolic links when there is one.
    """
    spec = str(spec)
    if glob.has_magic(spec):
        paths = [path for path in _glob(spec) if is_datasets_dir(path) or _is_data_file(path)]
    elif Path(spec).is_dir() and not is_datasets_dir(Path(spec)):
        paths = list(_walk(Path(spec)))
    elif Path(spec).exists():
        paths = [Path(spec)]
    elif problem := link_problem(Path(spec)):
        raise SourceError(f"source {problem}; fix the link or name the file itself in --set sources=...")
    else:
        raise SourceError(f"source not found: {spec}; check the path in --set sources=...")
    if not paths:
        raise SourceError(f"no data files match {spec} (looked for {', '.join(sorted(SUFFIXES))} and compressed "
                          f"versions of them)")
    return _unique(paths)


def data_files(path: Path) -> list[Path]:
    """The plain files one entry of `expand` is made of: the file itself, or every file of a `datasets` directory."""
    if not path.is_dir():
        return [path]
    return sorted(p for _, entries in _directories(path) for p in entries if p.is_file())


def _walk(root: Path) -> Iterator[Path]:
    for _, entries in _directories(root, lambda d: not is_datasets_dir(d)):
        yield from (path for path in entries if is_datasets_dir(path) or _is_data_file(path))


def _is_data_file(path: Path) -> bool:
    """A regular file with a data suffix (not a pipe or a device, whose read could block for ever). A broken or looping
    symbolic link with one is a SourceError naming it, not a file silently left out."""
    if data_suffix(path) not in SUFFIXES or path.is_dir():
        return False
    if problem := link_problem(path):
        raise SourceError(f"{problem}; fix or remove it")
    return path.is_file()


def _directories(root: Path, enter=lambda directory: True) -> Iterator[tuple[Path, list[Path]]]:
    """(directory, its entries sorted) for `root` and every directory under it that `enter` accepts.

    Symbolic links are followed, but each real directory (st_dev, st_ino) is listed once: a link back up the tree
    (`ln -s . d/self`) would otherwise make the walk loop, and two of them make it exponential. Directories reached
    without a link are listed first, so their paths are the ones kept.
    """
    seen, plain, linked = set(), [root], []
    while plain or linked:
        directory = plain.pop() if plain else linked.pop()
        try:
            key = _identity(directory)
            if key in seen:
                continue
            seen.add(key)
            entries = sorted(directory.iterdir())
        except OSError as exc:
            raise SourceError(f"cannot list the directory {directory}: {exc}") from None
        yield directory, entries
        for path in reversed(entries):  # popped in name order
            if path.is_dir() and enter(path):
                (linked if path.is_symlink() else plain).append(path)


def _glob(spec: str) -> list[Path]:
    """`glob.glob(spec, recursive=True)`, except that `**` lists each real directory once (`_directories`): Python's
    follows symbolic links to directories without end."""
    parts = Path(spec).parts
    if "**" not in parts:
        return [Path(p) for p in glob.glob(spec)]
    at = parts.index("**")
    bases = [Path(p) for p in glob.glob(str(Path(*parts[:at])))] if at else [Path(".")]
    rest, out = parts[at + 1:], []
    for base in bases:
        if not base.is_dir():
            continue
        for directory, entries in _directories(base, lambda d: not d.name.startswith(".")):  # as glob: no hidden
            if rest:
                out += _glob(os.path.join(glob.escape(str(directory)), *rest))
            else:
                out += [directory] + [p for p in entries if not p.name.startswith(".")]
    return out


def _identity(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def _unique(paths: list[Path]) -> list[Path]:
    """Sorted, each real file or directory once: under a path without symbolic links if it has one, else the first."""
    chosen = {}
    for path in sorted(paths, key=lambda p: (p.resolve() != p.absolute(), p)):
        chosen.setdefault(_identity(path), path)
    return sorted(chosen.values())


def link_problem(path: Path) -> str | None:
    """Why a symbolic link leads nowhere ("x is a symbolic link that loops (x -> y -> x)", "x is a broken symbolic
    link to y"), or None when `path` is not such a link."""
    if not path.is_symlink():
        return None
    try:
        path.stat()
        return None
    except OSError as exc:
        looping = exc.errno == errno.ELOOP
    if not looping:
        return f"{path} is a broken symbolic link to {os.readlink(path)}"
    hops, current, seen = [str(path)], path, set()
    while current.is_symlink() and current not in seen and len(hops) < 10:
        seen.add(current)
        target = os.readlink(current)
        hops.append(target)
        current = Path(os.path.normpath(current.parent / target))
    return f"{path} is a symbolic link that loops ({' -> '.join(hops)})"


def is_datasets_dir(path: Path) -> bool:
    """A directory written by `datasets`' `save_to_disk` (one split, or a DatasetDict of them)."""
    return path.is_dir() and any((path / n).exists() for n in ("state.json", "dataset_dict.json"))


def data_suffix(path: Path) -> str:
    """`a.jsonl.gz` -> `.jsonl`."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""
