"""A persistent near-duplicate index: what earlier runs kept, so a later run or refresh dedups against it.

Layout of an index directory:
- `manifest.json`: `format` (an integer, see MIGRATIONS), the library version that last wrote it, the `settings` that
  make signatures comparable (hash scheme, permutations, bands x rows, seed, shingling, normalisation, what is
  compared), and `shards`: one entry per shard file (`file`, the `run` fingerprint that added it, `rows`, `added`).
- `shard-<run>.parquet`, or `shard-<run>-<k>.parquet` (several per run, as the Ray engine's workers wrote them):
  `id`, `length` (characters of the compared text), `signature` (uint32 x num_perm) and `band_keys` (uint64 x bands)
  of the rows that run kept.

A run's own shard is left out when the same run loads the index again (a rerun after a kill must not find itself).
Opening an index built with other settings raises ConfigError naming each setting that differs. Older formats are
upgraded in place by the numbered MIGRATIONS before use.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import __version__
from pipelines.core.errors import ConfigError
from pipelines.core.files import replace_with, write_json, write_table
from pipelines.dedup.lsh import band_keys

FORMAT = 2


def _v1_to_v2(root: Path, manifest: dict) -> dict:
    """Format 1 stored signatures only; format 2 also stores band keys, so loading needs no rehashing."""
    settings = manifest["settings"]
    for shard in manifest["shards"]:
        path = root / shard["file"]
        table = pq.read_table(path)
        sigs = matrix(table["signature"], np.uint32)
        keys = band_keys(sigs, settings["bands"], settings["rows"])
        table = table.append_column("band_keys", fixed_list(keys, pa.uint64()))
        write_table(table, path)
    return manifest


MIGRATIONS: dict[int, Callable[[Path, dict], dict]] = {1: _v1_to_v2}  # MIGRATIONS[n] upgrades format n to n + 1


@dataclass
class Signed:
    """Rows as near-dedup sees them: ids, lengths of the compared text, signatures and band keys."""

    ids: list[str]
    lengths: np.ndarray
    sigs: np.ndarray
    keys: np.ndarray

    @classmethod
    def empty(cls, num_perm: int, bands: int) -> "Signed":
        return cls([], np.empty(0, np.int64), np.empty((0, num_perm), np.uint32), np.empty((0, bands), np.uint64))

    def __len__(self) -> int:
        return len(self.ids)

    def __add__(self, other: "Signed") -> "Signed":
        return Signed(self.ids + other.ids, np.concatenate([self.lengths, other.lengths]),
                      np.concatenate([self.sigs, other.sigs]), np.concatenate([self.keys, other.keys]))

    def take(self, rows: np.ndarray) -> "Signed":
        return Signed([self.ids[i] for i in rows], self.lengths[rows], self.sigs[rows], self.keys[rows])


def matrix(column: pa.ChunkedArray, dtype) -> np.ndarray:
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    width = array.type.list_size
    return np.asarray(array.flatten(), dtype=dtype).reshape(-1, width) if len(array) else np.empty((0, width), dtype)


def fixed_list(matrix: np.ndarray, value_type: pa.DataType) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), type=value_type), matrix.shape[1])


def index_dir_problem(path: str | Path) -> str | None:
    """Why `path` cannot be (or become) an index directory (it, or a folder above it, is a file), or None."""
    path = Path(path)
    for at in (path, *path.parents):
        try:
            if at.is_dir():
                return None
            if at.exists():
                return f"{at} is a file, not a directory" if at == path else f"{at} is a file, so {path} cannot be made"
        except OSError as exc:
            return f"{at}: {exc.strerror}"
    return None


class MinHashIndex:
    def __init__(self, root: Path, settings: dict):
        if problem := index_dir_problem(root):
            raise ConfigError(f"dedup index: {problem}; name a directory")
        self.root = Path(root)
        self.settings = settings
        self.manifest = self._open()

    def _open(self) -> dict:
        path = self.root / "manifest.json"
        if not path.exists():
            return {"format": FORMAT, "library": __version__, "settings": self.settings, "shards": []}
        try:
            manifest = json.loads(path.read_text())
            version = int(manifest["format"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path} is not a dedup index manifest: {exc}") from None
        if version > FORMAT:
            raise ConfigError(f"{path} has index format {version}, newer than this version of the library reads "
                              f"({FORMAT}); upgrade convoforge")
        differs = [f"{key}: index has {manifest['settings'].get(key)!r}, this run uses {value!r}"
                   for key, value in self.settings.items() if manifest["settings"].get(key) != value]
        if differs:
            raise ConfigError(f"the dedup index {self.root} was built with other settings, so its signatures cannot "
                              f"be compared with this run's ({'; '.join(differs)}); use the same settings or another "
                              "index directory")
        while version < FORMAT:
            manifest = MIGRATIONS[version](self.root, manifest)
            version += 1
            manifest["format"] = version
            self._save(manifest)
        return manifest

    def _save(self, manifest: dict) -> None:
        write_json(self.root / "manifest.json", manifest)

    def __len__(self) -> int:
        return sum(shard["rows"] for shard in self.manifest["shards"])

    def shards(self, exclude_run: str = "") -> list[tuple[Path, int]]:
        """(file, rows) of every shard in manifest order, except those a run with fingerprint `exclude_run` added."""
        return [(self.root / shard["file"], shard["rows"]) for shard in self.manifest["shards"]
                if shard["run"] != exclude_run]

    def load(self, exclude_run: str = "") -> Signed:
        """Every indexed row, except those a run with fingerprint `exclude_run` added."""
        rows = Signed.empty(self.settings["num_perm"], self.settings["bands"])
        for path, _ in self.shards(exclude_run):
            table = pq.read_table(path)
            rows += Signed(table["id"].to_pylist(), table["length"].to_numpy(),
                           matrix(table["signature"], np.uint32), matrix(table["band_keys"], np.uint64))
        return rows

    def add(self, run: str, rows: Signed) -> None:
        """Store the rows a run kept as one shard (replacing what that run added before), then the manifest."""
        table = pa.table({"id": pa.array(rows.ids, pa.string()), "length": pa.array(rows.lengths, pa.int64()),
                          "signature": fixed_list(rows.sigs, pa.uint32()),
                          "band_keys": fixed_list(rows.keys, pa.uint64())})
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"shard-{run[:16]}.parquet"
        write_table(table, self.root / name)
        self._record(run, [(name, len(rows))])

    def add_files(self, run: str, files: list[Path]) -> None:
        """Store a run's kept rows from shard files it wrote elsewhere (columns as `add` writes them), one index shard
        each (replacing what that run added before), then the manifest: an index a distributed run builds stays in
        shards no larger than the ones its workers wrote."""
        self.root.mkdir(parents=True, exist_ok=True)
        added = []
        for k, path in enumerate(files):
            name = f"shard-{run[:16]}-{k:05d}.parquet"
            replace_with(self.root / name, lambda tmp: shutil.copyfile(path, tmp))  # noqa: B023 (called at once)
            added.append((name, pq.read_metadata(self.root / name).num_rows))
        self._record(run, added)

    def _record(self, run: str, files: list[tuple[str, int]]) -> None:
        added = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        new = {name for name, _ in files}
        stale = [s["file"] for s in self.manifest["shards"] if s["run"] == run and s["file"] not in new]
        kept = [s for s in self.manifest["shards"] if s["run"] != run]
        kept += [{"file": name, "run": run, "rows": rows, "added": added} for name, rows in files]
        self.manifest = {**self.manifest, "format": FORMAT, "library": __version__, "shards": kept}
        self._save(self.manifest)
        for name in stale:  # after the manifest stops naming them
            (self.root / name).unlink(missing_ok=True)
