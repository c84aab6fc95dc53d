"""What dedup did in a run, for the report and the card: `runs/<recipe>/dedup/stats.json`, one section per stage.

Each section names the stage that wrote it; `prune` drops the sections of stages a recipe no longer has, so a card
never reports a decontamination that the current config did not run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def stats_path(run_dir: Path) -> Path:
    return Path(run_dir) / "dedup" / "stats.json"


def read_stats(run_dir: Path) -> dict:
    path = stats_path(run_dir)
    return json.loads(path.read_text()) if path.exists() else {}


def write_section(run_dir: Path, section: str, stage: str, values: dict) -> None:
    stats = read_stats(run_dir)
    stats[section] = {"stage": stage, **values}
    _write(run_dir, stats)


def prune(run_dir: Path, stages: set[str]) -> None:
    stats = read_stats(run_dir)
    kept = {k: v for k, v in stats.items() if v.get("stage") in stages}
    if kept != stats:
        _write(run_dir, kept)


def _write(run_dir: Path, stats: dict) -> None:
    path = stats_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("stats.json.tmp")
    tmp.write_text(json.dumps(stats, indent=2))
    os.replace(tmp, path)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(run_dir: Path) -> str:
    """A card section; empty when the run did no dedup."""
    stats = read_stats(run_dir)
    lines = []
    if near := stats.get("near"):
        probs = ", ".join(f"{_fmt(p)} at J={j}" for j, p in near["detection_probability"].items())
        planted = near["planted"]
        lines += [
            f"- Near-duplicates (MinHash LSH on the {near['compare']}, word {near['ngram']}-grams, "
            f"{near['num_perm']} permutations, {near['bands']} bands x {near['rows']} rows, pairs verified at "
            f"estimated Jaccard >= {near['threshold']}): {near['pairs']} pairs, {near['clusters']} clusters, "
            f"{near['dropped']} rows dropped; {near['indexed_before']} rows were in the persistent index before.",
            f"- Theoretical chance a pair becomes a candidate: {probs}.",
            f"- Measured recall on {planted['pairs']} planted edited copies of this run's texts: "
            f"{_fmt(planted.get('recall_at_0.8'))} at true Jaccard >= 0.8 ({planted.get('pairs_at_0.8', 0)} pairs), "
            f"{_fmt(planted.get('recall_at_0.9'))} at >= 0.9 ({planted.get('pairs_at_0.9', 0)} pairs).",
        ]
    if decon := stats.get("decontamination"):
        counters = {}
        for success in Path(run_dir).glob("*_decontaminate/_SUCCESS.json"):
            counters = json.loads(success.read_text()).get("counters", {})
        found = ", ".join(f"{k.removeprefix('contaminated_')}: {v}" for k, v in sorted(counters.items())
                          if k.startswith("contaminated_")) or "none"
        lines.append(f"- Decontamination ({decon['ngram']}-gram overlap with "
                     + ", ".join(f"{k} ({n} prompts, sha256 {decon['sha256'][k][:12]})"
                                 for k, n in decon["prompts"].items()) + f"): rows dropped {found}.")
    if leak := stats.get("leakage"):
        lines.append(f"- Cross-split leakage check: {leak['pairs_across']} near-duplicate pairs straddled train and "
                     f"test; {leak['moved']} test rows moved to train; {leak['after']} remain.")
    return "\n".join(lines) or "- No deduplication in this recipe."
