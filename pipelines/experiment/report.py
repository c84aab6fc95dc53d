"""An experiment's results: per eval step and suite, each variant's score (the mean over its seeds of each item's
score, with a bootstrap 95% CI over items), its paired difference from the control with a paired-bootstrap CI, the
seed-to-seed spread of its suite means, and a bar chart with the CIs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipelines.eval.stats import beyond, ci_text, mean_ci, paired_ci, rounded


def item_scores(eval_dir: Path, suite: str) -> dict[str, tuple[float | None, float | None]]:
    """item id -> (model score, baseline score) of one eval step's suite."""
    found = json.loads((eval_dir / f"{suite}.json").read_text())
    return {r["id"]: (r.get("score"), r.get("baseline_score")) for r in found["items"]}


def summarize(runs: dict[str, list[dict]], suites: dict[str, tuple[str, ...]], control: str = "control") -> list[dict]:
    """`runs`: variant -> one {eval step name: eval dir} per seed (a failed variant: an empty list)."""
    rows = []
    for step, names in suites.items():
        for suite in names:
            per_variant = {}
            for variant, seeds in runs.items():
                found = [item_scores(Path(s[step]), suite) for s in seeds if step in s]
                if found:
                    per_variant[variant] = found
            control_items = _seed_means(per_variant.get(control, []))
            for variant, found in per_variant.items():
                items = _seed_means(found)
                suite_means = [np.mean([v[0] for v in f.values() if v[0] is not None]) for f in found if f]
                both = [(v, b) for v, b in items.values() if v is not None and b is not None]
                row = {"step": step, "suite": suite, "variant": variant, "seeds": len(found), "items": len(items),
                       "score": rounded(mean_ci([v for v, _ in items.values() if v is not None])),
                       "baseline": rounded(mean_ci([b for _, b in items.values() if b is not None])),
                       "vs_baseline": rounded(paired_ci(*zip(*both))) if both else None,
                       "seed_spread": round(float(np.std(suite_means)), 4) if len(suite_means) > 1 else None}
                shared = [k for k in items if k in control_items and items[k][0] is not None
                          and control_items[k][0] is not None]
                if variant != control and shared:
                    diff = paired_ci([items[k][0] for k in shared], [control_items[k][0] for k in shared])
                    row.update(difference=rounded(diff), beyond_ci=beyond(diff))
                rows.append(row)
    return rows


def _seed_means(found: list[dict]) -> dict[str, tuple[float | None, float | None]]:
    """Each item's scores averaged over the seeds that scored it."""
    out = {}
    for key in sorted({k for f in found for k in f}):
        model = [f[key][0] for f in found if key in f and f[key][0] is not None]
        base = [f[key][1] for f in found if key in f and f[key][1] is not None]
        out[key] = (float(np.mean(model)) if model else None, float(np.mean(base)) if base else None)
    return out


def markdown(name: str, about: str, rows: list[dict], failed: dict[str, str], steps: list[dict]) -> str:
    lines = [f"# Experiment `{name}`", "", about, "", "![scores](report.png)", "",
             "| eval | suite | variant | seeds | items | score (95% CI) | baseline (95% CI) "
             "| vs baseline (paired 95% CI) | vs control (paired 95% CI) | seed spread (sd) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = ci_text(r.get("difference")) + (" **beyond the CI**" if r.get("beyond_ci") else "")
        gain = ci_text(r.get("vs_baseline")) + (" **beyond the CI**" if r.get("vs_baseline") and r["vs_baseline"][0]
                                            is not None and beyond(r["vs_baseline"]) else "")
        lines.append(f"| {r['step']} | {r['suite']} | {r['variant']} | {r['seeds']} | {r['items']} | "
                     f"{ci_text(r['score'])} | {ci_text(r['baseline'])} | {gain} | "
                     f"{diff if r.get('difference') else '-'} | "
                     f"{r['seed_spread'] if r['seed_spread'] is not None else '-'} |")
    lines += [f"- variant `{v}` did not finish: {why}" for v, why in failed.items()]
    lines += ["", "## Steps", "", "| variant | seed | step | seconds | peak memory (MB) | directory |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {s['variant']} | {s['seed']} | {s['step']} | {s['seconds']} | {s['peak_rss_mb']} | "
              f"`{s['dir']}` |" for s in steps]
    lines += ["", "Small models trained on a CPU are noisy: read a difference by its CI and the seed spread, never by "
                  "its point value."]
    return "\n".join(lines) + "\n"


def chart(rows: list[dict], path: Path) -> None:
    """One bar per (eval, suite, variant), with its 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["score"][0] is not None]
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(shown) + 1), 3.6))
    if shown:
        x = np.arange(len(shown))
        means = np.array([r["score"][0] for r in shown])
        errors = np.array([[m - r["score"][1], r["score"][2] - m] for m, r in zip(means, shown)]).T
        colors = ["#4c72b0" if r["variant"] == "control" else "#dd8452" for r in shown]
        ax.bar(x, means, yerr=errors, capsize=4, color=colors)
        ax.set_xticks(x, [f"{r['suite']}\n{r['variant']}" for r in shown], fontsize=7, rotation=30, ha="right")
    ax.set_ylabel("score (95% CI)")
    ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
