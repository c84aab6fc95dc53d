"""Judges against people's labels, before and after calibration, and which pairs to ask people about first.

    python bench/calibration.py [--n-hh 200] [--n-graded 120] [--judges qwen2.5-coder-1.5b] [--modes pairwise,pointwise]

Sets: hh (the first N pairs of ../shared/data/real/hh_rlhf_harmless_base_test.jsonl.gz, people's harmlessness
labels; the helpful half is not in ../shared) and graded (bench/graded_pairs.py: a good AlpacaEval answer against
the same answer degraded by a rule). For each judge, set and mode, `pipelines.judge.calibrate` gives: agreement
(ties a half) with its 95% CI, agreement of the calibrated choice on held-out halves, ECE there, and agreement on
the surer half (abstaining on the least sure 50%).

Then a simulated reviewer labels the hh pairs one at a time, in two orders: random, and uncertainty-first (the
judge's smallest score margin first, as the review app asks before there is a calibration), measuring the raw
judge's agreement. The table gives how many labels
each order needs before the 95% CI of the judge's agreement on the labelled pairs is at most 0.1 wide on each
side, and what that estimate is against the agreement on every pair (an order that picks hard pairs first
measures the judge on hard pairs). Answers are cached in $TMPDIR/calibration-bench/requests.sqlite.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from graded_pairs import graded_pairs  # noqa: E402

from pipelines.judge.__main__ import judge_config  # noqa: E402
from pipelines.judge.calibrate import calibrate  # noqa: E402
from pipelines.judge.labelled import labelled_pairs, shown_pairs  # noqa: E402
from pipelines.teacher.client import Teacher  # noqa: E402

HH = ROOT.parent / "shared" / "data" / "real" / "hh_rlhf_harmless_base_test.jsonl.gz"


def labels_needed(outcomes: list[float], half_width: float = 0.1) -> int | None:
    """The fewest labels after which the normal 95% CI of the mean agreement is at most `half_width` each side."""
    total = 0.0
    for k, value in enumerate(outcomes, 1):
        total += value
        p = total / k
        if k >= 10 and 1.96 * math.sqrt(max(p * (1 - p), 1e-9) / k) <= half_width:
            return k
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-hh", type=int, default=200)
    parser.add_argument("--n-graded", type=int, default=120)
    parser.add_argument("--judges", default="qwen2.5-coder-1.5b")
    parser.add_argument("--modes", default="pairwise,pointwise")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    sets = {"hh": labelled_pairs(str(HH), args.n_hh)}
    graded, digest = shown_pairs([{**p, "category": p["rule"]} for p in graded_pairs(args.n_graded)])
    sets["graded"] = (graded, {"source": "bench/graded_pairs.py", "kind": "graded", "pairs": len(graded),
                               "digest": digest})
    work = Path(tempfile.gettempdir()) / "calibration-bench"
    work.mkdir(exist_ok=True)
    modes = args.modes.split(",")
    rows, orders = [], []
    for spec in args.judges.split(","):
        config = judge_config(spec, args.concurrency)
        judge = Teacher(config, work / "requests.sqlite", work / f"{spec}.log",
                        log=lambda m: print(m, file=sys.stderr), role="judge")
        try:
            for set_name, (pairs, labels) in sets.items():
                for c in calibrate({spec: (config, judge)}, modes, pairs, labels,
                                   log=lambda m: print(m, file=sys.stderr)):
                    rows.append((spec, set_name, c))
                    if set_name == "hh":
                        orders.append((spec, c, pairs))
        finally:
            judge.close()
    print("| judge | set | mode | pairs | agreement (95% CI) | map | calibrated, held out (95% CI) | ECE, held out | "
          "at 50% coverage | s/pair |\n|---|---|---|---|---|---|---|---|---|---|")
    for spec, set_name, c in rows:
        m = c.measured
        print(f"| {spec} | {set_name} | {c.judge['mode']} | {m['pairs']} | {m['agreement']:.3f} "
              f"({m['agreement_ci'][0]:.3f}-{m['agreement_ci'][1]:.3f}) | {m['map']} | {m['calibrated_agreement']:.3f} "
              f"({m['calibrated_agreement_ci'][0]:.3f}-{m['calibrated_agreement_ci'][1]:.3f}) | {m['ece']:.3f} | "
              f"{m['agreement_at_half_coverage']:.3f} | {m['s_per_pair']:.2f} |")
    print("\nLabels a simulated reviewer needs on hh for a CI half-width of 0.1 on the judge's agreement:\n")
    print("| judge | mode | order | labels needed | agreement estimated then | agreement on all pairs |\n"
          "|---|---|---|---|---|---|")
    for spec, c, pairs in orders:
        outcomes, surety = c.measured["raw"]["agrees"], c.measured["raw"]["margin"]
        overall = sum(outcomes) / len(outcomes)
        shuffled = list(range(len(outcomes)))
        random.Random(0).shuffle(shuffled)
        unsure_first = sorted(range(len(outcomes)), key=lambda k: surety[k])
        for name, order in (("random", shuffled), ("uncertainty-first", unsure_first)):
            seq = [outcomes[k] for k in order]
            k = labels_needed(seq)
            estimate = "-" if k is None else f"{sum(seq[:k]) / k:.3f}"
            print(f"| {spec} | {c.judge['mode']} | {name} | {k if k is not None else f'> {len(seq)}'} | {estimate} | "
                  f"{overall:.3f} |")


if __name__ == "__main__":
    main()
