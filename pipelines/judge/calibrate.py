"""`python -m pipelines.judge calibrate`: how far each judge, in each mode, agrees with people's labels, and the map
from its score to P(a person agrees).

For every judge and mode, on the same pairs: the `Judge` stage rates both answers as the ultrafeedback recipe does
(logprobs where the endpoint gives them); the raw score of A over B is the difference of the two `overall` ratings
(pointwise: expected digits 1-9; pairwise: expected wins over both orders; listwise: UltraFeedback's overall 1-10,
both answers shown at once, averaged over the orders). Then:
- agreement with the labels (a tie or an unrated pair counts a half) with a 95% bootstrap CI, ties, agreement by
  slice, the share of first-position wins and of pairs whose two orders agree (pairwise), seconds and cost per pair;
- calibration: the pairs split in two halves by a hash of their id; a map from score to P(person prefers A)
  fitted on one half (`fit_map`: isotonic, logistic or the base rate, whichever cross-validates best there) is
  measured on the other (agreement of the calibrated choice, ECE, reliability bins,
  agreement on the surer half: abstaining on the least sure 50%), then the map refitted on all pairs goes into the
  file;
- the choice: the cheapest judge and mode (seconds per pair, or cost where priced) whose agreement meets `--target`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import polars as pl

from pipelines.core.calibration import Calibration, apply, expected_calibration_error, fit_map, reliability
from pipelines.core.stage import Context
from pipelines.eval.stats import mean_ci
from pipelines.stages.judge import Judge, judge_identity
from pipelines.stages.pairs import COMPLETIONS


def frame_of(pairs: list[dict]) -> pl.DataFrame:
    completions = [[{"model": side, "principle": None, "content": p[side], "ratings": [], "overall": None}
                    for side in ("a", "b")] for p in pairs]
    return pl.DataFrame({"prompt": [p["prompt"] for p in pairs]}).with_columns(
        pl.Series("completions", completions, dtype=COMPLETIONS))


def scores(judge, mode: str, orderings: int, pairs: list[dict], max_tokens: int = 96) -> tuple[list, dict]:
    """(raw score of A over B per pair, None when unrated; the judge's counters, seconds and cost)."""
    ctx = Context(run_dir=Path(tempfile.mkdtemp(prefix="calibrate-")), config=None,
                  clients={"teacher": judge, "judge": judge})
    cost_before, started = judge.stats.get("cost", 0.0), time.monotonic()
    out = Judge(mode=mode, orderings=orderings, max_tokens=max_tokens).process(frame_of(pairs), ctx)
    found = []
    for completions in out["completions"].to_list():
        rated = {c["model"]: c["overall"] for c in completions}
        a, b = rated.get("a"), rated.get("b")
        found.append(None if a is None or b is None else float(a) - float(b))
    counters = ctx.counters
    return found, {"seconds": time.monotonic() - started, "cost": judge.stats.get("cost", 0.0) - cost_before,
                   "first_wins": counters["judge_first_wins"] / counters["judge_verdicts"]
                   if counters["judge_verdicts"] else None,
                   "orders_agree": counters["ordering_pairs_agreeing"] / counters["ordering_pairs_compared"]
                   if counters["ordering_pairs_compared"] else None,
                   "parse_failures": counters["judge_parse_failures"]}


def agrees(score: float | None, human: float) -> float:
    """1 when the score prefers the person's answer, 0 the other, 0.5 a tie or no score."""
    if score is None or score == 0:
        return 0.5
    return 1.0 if (score > 0) == (human == 1.0) else 0.0


def calibrated_agreement(probs: list[float], humans: list[float]) -> list[float]:
    return [0.5 if p == 0.5 else 1.0 if (p > 0.5) == (h == 1.0) else 0.0 for p, h in zip(probs, humans)]


def measure(found: list, pairs: list[dict]) -> tuple[dict, list[float], list[float]]:
    """The numbers of one judge and mode, and the map fitted on every rated pair."""
    humans = [p["human"] for p in pairs]
    raw = [agrees(s, h) for s, h in zip(found, humans)]
    by_slice: dict[str, list[float]] = {}
    for p, outcome in zip(pairs, raw):
        for name, value in p["slices"].items():
            by_slice.setdefault(f"{name}={value}", []).append(outcome)
    halves = [int(p["id"][8:16], 16) % 2 for p in pairs]  # not id[:8]: that bit chose which answer is A
    held_probs, held_humans = [], []
    for fit_half in (0, 1):  # fit on one half, measure on the other, both ways: every pair is measured once
        fit = [(s, h) for s, h, half in zip(found, humans, halves) if half == fit_half and s is not None]
        _, xs, ys = fit_map([s for s, _ in fit], [h for _, h in fit], mirror=True)
        for s, h, half in zip(found, humans, halves):
            if half != fit_half:
                held_probs.append(0.5 if s is None else apply(xs, ys, s))
                held_humans.append(h)
    held = calibrated_agreement(held_probs, held_humans)
    order = sorted(range(len(held_probs)), key=lambda k: -abs(held_probs[k] - 0.5))
    surer = [held[k] for k in order[: max(1, len(order) // 2)]]
    rated = [(s, h) for s, h in zip(found, humans) if s is not None]
    method, xs, ys = fit_map([s for s, _ in rated], [h for _, h in rated], mirror=True)
    agreement, low, high = mean_ci(raw)
    calibrated, c_low, c_high = mean_ci(held)
    return {
        "map": method, "pairs": len(pairs), "unrated": sum(s is None for s in found),
        "ties": sum(s == 0 for s in found),
        "agreement": agreement, "agreement_ci": [low, high],
        "calibrated_agreement": calibrated, "calibrated_agreement_ci": [c_low, c_high],
        "ece": expected_calibration_error(held_probs, held_humans), "reliability": reliability(held_probs, held_humans),
        "agreement_at_half_coverage": sum(surer) / len(surer),
        "by_slice": {k: {"n": len(v), "agreement": sum(v) / len(v)} for k, v in sorted(by_slice.items())},
        # per pair, for the bench: the calibrated choice on held-out halves, and the raw score's
        "held_out": {"agrees": held, "surety": [abs(p - 0.5) for p in held_probs]},
        "raw": {"agrees": raw, "margin": [0.0 if s is None else abs(s) for s in found]},
    }, xs, ys


def calibrate(judges: dict, modes: list[str], pairs: list[dict], labels: dict, orderings: int = 2,
              log=print) -> list[Calibration]:
    """A calibration per judge (name -> Teacher) and mode, all on the same pairs."""
    out = []
    for name, (config, judge) in judges.items():
        for mode in modes:
            log(f"judging {len(pairs)} pairs with {name} ({mode})")
            found, run = scores(judge, mode, orderings, pairs)
            measured, xs, ys = measure(found, pairs)
            measured.update({"s_per_pair": run["seconds"] / len(pairs), "cost_per_pair": run["cost"] / len(pairs),
                             "first_position_wins": run["first_wins"], "orders_agree": run["orders_agree"],
                             "parse_failures": run["parse_failures"]})
            out.append(Calibration(judge_identity(config, mode, orderings), xs, ys, measured, labels,
                                   notes=[f"judge {name}"]))
    return out


def choose(found: list[Calibration], target: float) -> tuple[Calibration | None, str]:
    """The cheapest calibration whose calibrated agreement meets `target`, and the line that says so."""
    meeting = [c for c in found if c.measured["calibrated_agreement"] >= target]
    if not meeting:
        best = max(found, key=lambda c: c.measured["calibrated_agreement"])
        return None, (f"no judge meets agreement {target} on these labels: the best is {best.judge['model']} "
                      f"({best.judge['mode']}) at {best.measured['calibrated_agreement']:.3f}; label more pairs or "
                      "try a stronger judge")
    pick = min(meeting, key=lambda c: (c.measured["cost_per_pair"], c.measured["s_per_pair"]))
    low, high = pick.measured["calibrated_agreement_ci"]
    return pick, (f"chosen: {pick.judge['model']} ({pick.judge['mode']}), agreement "
                  f"{pick.measured['calibrated_agreement']:.3f} ({low:.3f}-{high:.3f}) >= {target}, the cheapest that "
                  f"meets it ({pick.measured['s_per_pair']:.2f} s per pair)")


def table(found: list[Calibration]) -> str:
    """The comparison as a Markdown table."""
    head = ("| judge | mode | pairs | agreement (95% CI) | calibrated (95% CI) | ECE | at 50% coverage | ties | "
            "first wins | orders agree | s/pair |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for c in found:
        m = c.measured
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(f"| {c.judge['model']} | {c.judge['mode']} | {m['pairs']} | {m['agreement']:.3f} "
                     f"({m['agreement_ci'][0]:.3f}-{m['agreement_ci'][1]:.3f}) | {m['calibrated_agreement']:.3f} "
                     f"({m['calibrated_agreement_ci'][0]:.3f}-{m['calibrated_agreement_ci'][1]:.3f}) | "
                     f"{m['ece']:.3f} | {m['agreement_at_half_coverage']:.3f} | {m['ties']} | "
                     f"{fmt(m['first_position_wins'])} | {fmt(m['orders_agree'])} | {m['s_per_pair']:.2f} |")
    return "\n".join(lines)


def reliability_picture(found: list[Calibration], path: Path) -> None:
    """The reliability diagram of every judge and mode: predicted against observed, on held-out halves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfectly calibrated")
    for c in found:
        bins = c.measured["reliability"]
        ax.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], marker="o",
                label=f"{c.judge['model']} {c.judge['mode']} (ECE {c.measured['ece']:.3f})")
    ax.set_xlabel("P(person prefers A), calibrated on the other half")
    ax.set_ylabel("share of pairs where the person preferred A")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
