"""What the review app reads of a run, lazily: a stage's rows are scanned (`polars.scan_parquet`) and only the page
asked for is collected, so a stage of a million rows opens and pages in well under a second (`bench/review.py`).

A run directory holds `report.json`, one folder per stage (`NN_name/part-*.parquet` kept rows,
`NN_name/dropped.parquet` dropped rows with their `drop_reason`), `quarantine.parquet`, `dedup/clusters.parquet` and
`export/`. A refresh root (`manifest.json`, `work/vN/`) is reviewed through its latest version's build.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from pipelines.core.labels import digest, latest, pair_key
from pipelines.core.stage import DROP
from pipelines.eval.suites import names as suite_names

PAGE = 20
PAIR_CHUNK = 5_000  # pairs read at a time when filtering by label
CLUSTER_SHOWN = 5  # near-duplicates shown per cluster; the rest are counted
TEXT_READ = 60_000  # characters of a dedup cluster member read (a page shows 20,000; a diff compares 2,000 words)
STATUSES = ("all", "kept", "dropped")


class NotFound(LookupError):
    """A stage, file or row the run does not have."""


def resolve_run(path: Path) -> Path:
    """The run directory to review: `path` itself (a run, or a `pipelines.eval` directory), or a refresh root's
    latest build (`work/vN`)."""
    path = Path(path).resolve()
    if (path / "report.json").exists() or any(path.glob("[0-9][0-9]_*")) or eval_suites(path):
        return path
    builds = sorted((path / "work").glob("v*"), key=lambda p: int(p.name[1:]) if p.name[1:].isdigit() else -1)
    if (path / "manifest.json").exists() and builds:
        return builds[-1]
    raise NotFound(f"{path} is neither a run directory (report.json, NN_stage/ folders), a refresh root "
                   f"(manifest.json and work/vN/) nor an eval directory (report.md and <suite>.json)")


def report(run_dir: Path) -> dict:
    path = run_dir / "report.json"
    return json.loads(path.read_text()) if path.exists() else {"stages": []}


def stage_dirs(run_dir: Path) -> dict[str, Path]:
    """Stage name (`dedup_near`) -> its folder (`03_dedup_near`), in pipeline order."""
    return {p.name.split("_", 1)[1]: p for p in sorted(run_dir.glob("[0-9][0-9]_*")) if p.is_dir()}


@dataclass
class RowQuery:
    """A page of a stage's rows: which rows (`status`, `reason`, `source`, text `search`, conversation length in
    characters, a numeric `score` column at least `score_min`), in which order, which page."""

    status: str = "all"
    reason: str = ""
    source: str = ""
    search: str = ""
    min_chars: int | None = None
    max_chars: int | None = None
    score: str = ""
    score_min: float | None = None
    sort: str = ""
    descending: bool = False
    page: int = 1
    size: int = PAGE


@dataclass
class Page:
    rows: list[dict]
    total: int
    columns: list[str]
    reasons: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    searchable: bool = True  # the stage has text to search and measure


def category(column: str) -> pl.Expr:
    """A reason's category, as `pipelines.core.parts.reason_category` reads it: `"near_duplicate: of 3fa2"` ->
    `"near_duplicate"`."""
    return pl.col(column).str.split(":").list.first().str.strip_chars()


def _scan(files: list[Path]) -> pl.LazyFrame | None:
    frames = [pl.scan_parquet(f) for f in files if f.stat().st_size]
    if not frames:
        return None
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")


def text_of(schema: pl.Schema) -> pl.Expr | None:
    """One string per row to search and measure: a conversation's turns, or the text, prompt, raw or preview
    column, else every string column joined; None when the stage has no strings at all."""
    if "messages" in schema:
        return pl.col("messages").list.eval(pl.element().struct.field("content")).list.join("\n")
    for name in ("text", "prompt", "raw", "preview"):
        if name in schema and schema[name] == pl.String:
            return pl.col(name)
    strings = [name for name, kind in schema.items() if kind == pl.String and name != DROP]
    return pl.concat_str([pl.col(n) for n in strings], separator="\n", ignore_nulls=True) if strings else None


def stage_scan(run_dir: Path, stage: str, status: str = "all") -> pl.LazyFrame:
    folder = stage_dirs(run_dir).get(stage)
    if folder is None:
        raise NotFound(f"no stage {stage!r} in {run_dir}")
    kept = sorted(folder.glob("part-*.parquet")) if status in ("all", "kept") else []
    dropped = [folder / "dropped.parquet"] if status in ("all", "dropped") and (folder / "dropped.parquet").exists() \
        else []
    parts = [p if DROP in p.collect_schema() else p.with_columns(pl.lit(None, pl.String).alias(DROP))
             for p in (_scan(kept), _scan(dropped)) if p is not None]  # kept rows: a null reason
    if not parts:
        return pl.LazyFrame({DROP: []}, schema={DROP: pl.String})
    return parts[0] if len(parts) == 1 else pl.concat(parts, how="diagonal_relaxed")


def rows_page(lazy: pl.LazyFrame, q: RowQuery) -> Page:
    """Filter, sort and cut one page; the total counts every matching row."""
    schema = lazy.collect_schema()
    text = text_of(schema)
    filters = []
    if q.reason and DROP in schema:
        filters.append(category(DROP) == q.reason)
    if q.source and "source" in schema:
        filters.append(pl.col("source") == q.source)
    if q.search and text is not None:
        filters.append(text.str.to_lowercase().str.contains(q.search.lower(), literal=True))
    if text is not None and q.min_chars is not None:
        filters.append(text.str.len_chars() >= q.min_chars)
    if text is not None and q.max_chars is not None:
        filters.append(text.str.len_chars() <= q.max_chars)
    numeric = [n for n, t in schema.items() if t.is_numeric()]
    if q.score in numeric and q.score_min is not None:
        filters.append(pl.col(q.score) >= q.score_min)
    for f in filters:
        lazy = lazy.filter(f)
    if q.sort == "length" and text is not None:
        lazy = lazy.sort(text.str.len_chars(), descending=q.descending, nulls_last=True)
    elif q.sort in schema:
        lazy = lazy.sort(q.sort, descending=q.descending, nulls_last=True)
    total = lazy.select(pl.len()).collect().item()
    page = max(1, q.page)
    rows = lazy.slice((page - 1) * q.size, q.size).collect().to_dicts()
    return Page(rows, total, list(schema.names()), numeric=numeric, searchable=text is not None)


def facets(lazy: pl.LazyFrame, limit: int = 200) -> tuple[list[str], list[str]]:
    """The drop reasons and sources there are to filter by (the first `limit` of each)."""
    schema = lazy.collect_schema()
    reasons = (lazy.select(category(DROP).unique().drop_nulls().sort().head(limit)).collect().to_series().to_list()
               if DROP in schema else [])
    sources = (lazy.select(pl.col("source").unique().drop_nulls().sort().head(limit)).collect().to_series().to_list()
               if "source" in schema and schema["source"] == pl.String else [])
    return reasons, sources


def pair_stage(run_dir: Path) -> str | None:
    """The stage whose kept rows are the pairs as the AI judge ordered them (the export's input)."""
    names = [n for n, folder in stage_dirs(run_dir).items() if n != "export" and any(folder.glob("part-*.parquet"))]
    for name in reversed(names):
        if {"chosen", "rejected", "prompt_id"} <= set(stage_scan(run_dir, name, "kept").collect_schema().names()):
            return name
    return None


def pairs_page(run_dir: Path, page: int, size: int = 5, show: str = "all",
               order: str = "judge") -> tuple[str | None, list[dict], int]:
    """(the stage the pairs come from, a page of pairs with their key and current human label, how many match);
    `show` = all, unlabelled or labelled; `order` = judge (as the stage holds them) or unsure (`unsure_order`)."""
    stage = pair_stage(run_dir)
    if stage is None:
        return None, [], 0
    lazy = stage_scan(run_dir, stage, "kept")
    labels = latest(run_dir, "pair")
    start = (max(1, page) - 1) * size
    if order == "unsure":
        return stage, *_unsure_page(lazy, labels, start, size, show)
    if show == "all":  # only the page is read
        total = lazy.select(pl.len()).collect().item()
        return stage, _labelled(lazy.slice(start, size).collect().to_dicts(), labels), total
    wanted, seen, offset = [], 0, 0
    while not (chunk := lazy.slice(offset, PAIR_CHUNK).collect()).is_empty():  # a chunk at a time, not the stage
        offset += chunk.height
        for row in _labelled(chunk.to_dicts(), labels):
            if (row["label"] is None) == (show == "unlabelled"):
                if start <= seen < start + size:
                    wanted.append(row)
                seen += 1
    return stage, wanted, seen


def unsure_order(lazy: pl.LazyFrame) -> pl.DataFrame:
    """The pairs' row numbers, the ones people should see first first: those a second judge orders the other way
    (`judges_agree` false in meta), then the judge's least sure: the calibrated P(a person prefers chosen) nearest
    0.5 where the run has a calibration (`p_person` in meta), else the smallest score margin; then the pairs whose
    orderings disagreed most. With `pair_key` for the label filter."""
    names = lazy.collect_schema().names()
    p_person = (pl.col("meta").str.json_path_match("$.p_person").cast(pl.Float64) if "meta" in names
                else pl.lit(None, pl.Float64))
    disagree = (pl.col("meta").str.json_path_match("$.judges_agree").eq("false").fill_null(False) if "meta" in names
                else pl.lit(False))
    agreement = pl.col("ordering_agreement") if "ordering_agreement" in names else pl.lit(None, pl.Float64)
    keyed = lazy.with_row_index("_row").select(
        "_row", "prompt_id", "chosen", "rejected",
        pl.when(p_person.is_not_null()).then((p_person - 0.5).abs() * 2)
        .otherwise((pl.col("score_chosen") - pl.col("score_rejected")).abs()).alias("_surety"),
        agreement.alias("_agreement"), disagree.alias("_judges_disagree")).collect()
    keyed = keyed.sort(["_judges_disagree", "_surety", "_agreement"], descending=[True, False, False],
                       nulls_last=True)
    keys = [pair_key(p, c, r) for p, c, r in zip(keyed["prompt_id"], keyed["chosen"].to_list(),
                                                  keyed["rejected"].to_list())]
    return keyed.select("_row", "_surety").with_columns(pl.Series("pair_key", keys, dtype=pl.String))


def _unsure_page(lazy: pl.LazyFrame, labels: dict, start: int, size: int, show: str) -> tuple[list[dict], int]:
    ordered = [(row, key) for row, key in zip(*unsure_order(lazy).select("_row", "pair_key").to_dict().values())
               if show == "all" or (("pair", key) in labels) == (show == "labelled")]
    wanted = [row for row, _ in ordered[start:start + size]]
    rows = lazy.with_row_index("_row").filter(pl.col("_row").is_in(wanted)).collect().to_dicts()
    rank = {row: k for k, row in enumerate(wanted)}
    return _labelled(sorted(rows, key=lambda r: rank[r["_row"]]), labels), len(ordered)


def label_progress(run_dir: Path) -> dict:
    """The pairs people labelled so far and how often they agreed with the AI judge's order, with its 95% CI."""
    from pipelines.eval.stats import mean_ci

    counts: dict[str, int] = {}
    for made in latest(run_dir, "pair").values():
        counts[made.label] = counts.get(made.label, 0) + 1
    decided = [1.0] * counts.get("chosen_better", 0) + [0.0] * counts.get("rejected_better", 0)
    agreement, low, high = mean_ci(decided)
    return {"labelled": sum(counts.values()), "counts": counts, "decided": len(decided),
            "agreement": agreement if decided else None, "ci": [low, high] if decided else None}


def _labelled(rows: list[dict], labels: dict) -> list[dict]:
    """Each pair with its key and its current human label (None when nobody labelled it)."""
    for row in rows:
        row["pair_key"] = pair_key(row["prompt_id"], row["chosen"], row["rejected"])
        meta = json.loads(row.get("meta") or "{}")
        row["p_person"], row["judges_agree"] = meta.get("p_person"), meta.get("judges_agree", "absent")
        made = labels.get(("pair", row["pair_key"]))
        row["label"] = None if made is None else made.label
        row["label_note"] = None if made is None else made.note
    return rows


def clusters_page(run_dir: Path, page: int, size: int = 10) -> tuple[list[dict], int]:
    """Near-duplicate clusters: the kept row, then its dropped near-duplicates with their estimated Jaccard."""
    path = run_dir / "dedup" / "clusters.parquet"
    if not path.exists() or not path.stat().st_size:
        return [], 0
    lazy = pl.scan_parquet(path)
    ids = lazy.select(pl.col("cluster").unique().sort()).collect().to_series().to_list()
    chosen = ids[(max(1, page) - 1) * size: max(1, page) * size]
    members = (lazy.filter(pl.col("cluster").is_in(chosen)).sort("cluster", "kept", "id", descending=[False, True, False])
               .with_columns(pl.int_range(pl.len()).over("cluster").alias("_rank"), pl.len().over("cluster").alias("_n"))
               .filter(pl.col("_rank") <= CLUSTER_SHOWN).collect())
    full = full_texts(run_dir, members["id"].to_list())
    out = []
    for cid in chosen:
        group = members.filter(pl.col("cluster") == cid).to_dicts()
        for m in group:
            m["text"] = full.get(m["id"], m.get("preview") or "")
        kept = next((m for m in group if m["kept"]), group[0])
        out.append({"cluster": cid, "kept": kept, "dropped": [m for m in group if m is not kept],
                    "more": group[0]["_n"] - len(group)})
    return out, len(ids)


def full_texts(run_dir: Path, ids: list[str]) -> dict[str, str]:
    """The whole text of the rows `ids` from the near-dedup stage (its kept and dropped rows)."""
    stage = next((n for n in stage_dirs(run_dir) if "near" in n), None)
    if stage is None or not ids:
        return {}
    lazy = stage_scan(run_dir, stage)
    schema = lazy.collect_schema()
    text = text_of(schema)
    if text is None or "id" not in schema:
        return {}
    found = lazy.filter(pl.col("id").is_in(ids)).select("id", text.str.slice(0, TEXT_READ).alias("text")).collect()
    return dict(zip(found["id"].to_list(), found["text"].to_list()))


def quarantine_page(run_dir: Path, q: RowQuery) -> Page:
    path = run_dir / "quarantine.parquet"
    if not path.exists():
        return Page([], 0, [])
    lazy = pl.scan_parquet(path)
    if q.reason:
        lazy = lazy.filter(category("reason") == q.reason)
    if q.source:
        lazy = lazy.filter(pl.col("stage") == q.source)
    if q.search:
        lazy = lazy.filter(pl.col("raw").str.to_lowercase().str.contains(q.search.lower(), literal=True)
                           | pl.col("reason").str.to_lowercase().str.contains(q.search.lower(), literal=True))
    total = lazy.select(pl.len()).collect().item()
    rows = lazy.slice((max(1, q.page) - 1) * q.size, q.size).collect().to_dicts()
    every = pl.scan_parquet(path)
    reasons = every.select(category("reason").unique().sort()).collect().to_series().to_list()
    stages = every.select(pl.col("stage").unique().sort()).collect().to_series().to_list()
    return Page(rows, total, ["stage", "source", "locator", "reason", "raw"], reasons, stages)


def card_text(run_dir: Path) -> str:
    """The export's card without its YAML header ("" when the run has not exported)."""
    path = run_dir / "export" / "README.md"
    if not path.exists():
        return ""
    text = path.read_text(errors="replace")
    return re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)


def export_stage(run_dir: Path) -> str | None:
    """The name of the run's export stage (the last stage called export), None before one ran."""
    return next((n for n in reversed(stage_dirs(run_dir)) if n == "export"), None)


def has_export(run_dir: Path) -> bool:
    return export_stage(run_dir) is not None


def reaching_export(run_dir: Path, ids: list[str]) -> set[str]:
    """Which of `ids` are rows the export stage reads (kept, or dropped by a person): the rows a row label acts on.
    A label on any other row would be stored and then ignored, so the pages offer none there."""
    stage = export_stage(run_dir)
    if stage is None or not ids:
        return set()
    lazy = stage_scan(run_dir, stage)
    if "id" not in lazy.collect_schema():
        return set()
    found = lazy.select(pl.col("id").cast(pl.String)).filter(pl.col("id").is_in(ids)).collect()
    return set(found["id"].to_list())


def labels_in_export(run_dir: Path) -> bool:
    """Whether the export, as it stands, applied the labels as they are now (`labels.sqlite`'s digest equals the one
    its `_SUCCESS.json` recorded); no export yet counts as not applied unless nobody labelled anything."""
    stage = export_stage(run_dir)
    done = stage_dirs(run_dir)[stage] / "_SUCCESS.json" if stage else None
    applied = json.loads(done.read_text()).get("labels", "") if done is not None and done.exists() else None
    now = digest(run_dir)
    return applied == now or (applied is None and not now)


def rebuild_command(run_dir: Path) -> str:
    """The command that exports again with the labels: the run's own build command as report.json recorded it."""
    found = report(run_dir)
    command = found.get("command")
    if isinstance(command, list) and all(isinstance(c, str) for c in command):
        return shlex.join(command)
    recipe = found.get("recipe") or "RECIPE"
    return shlex.join(["python", "-m", "pipelines.build", str(recipe), "--run-dir", str(run_dir)]) + \
        " (with the --set options of the first build)"


def experiment_name(run_dir: Path) -> str | None:
    """The experiment whose directory this is (its report.json, written by pipelines.experiment), else None."""
    try:
        found = json.loads((run_dir / "report.json").read_text())
    except (OSError, ValueError):
        return None
    return found.get("experiment") if isinstance(found, dict) and isinstance(found.get("experiment"), str) else None


def eval_suites(run_dir: Path) -> list[str]:
    """The suites a `pipelines.eval` directory holds (`<suite>.json` beside `report.md`)."""
    if not (run_dir / "report.md").is_file():
        return []
    return [s for s in suite_names() if (run_dir / f"{s}.json").is_file()]


def eval_page(run_dir: Path, suite: str, verdict: str, page: int, size: int = PAGE) -> dict:
    """A page of an eval's items (optionally one verdict's), with the suite's summary and every verdict there is."""
    if suite not in eval_suites(run_dir):
        raise NotFound(f"no eval suite {suite!r} in {run_dir}")
    found = json.loads((run_dir / f"{suite}.json").read_text())
    items = found.get("items", [])
    verdicts = sorted({str(i.get("verdict")) for i in items})
    chosen = [i for i in items if not verdict or str(i.get("verdict")) == verdict]
    start = (max(1, page) - 1) * size
    return {"suite": suite, "summary": found.get("summary", {}), "model": found.get("model"),
            "baseline": found.get("baseline"), "verdicts": verdicts, "items": chosen[start:start + size],
            "total": len(chosen)}
