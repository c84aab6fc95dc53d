"""How often the judge agrees with a known preference: human labels (hh-rlhf) and a graded set (good vs degraded).

    python bench/judge_agreement.py [--sets graded,hh] [--n-graded 240] [--n-hh 300]
        [--modes pointwise,pairwise] [--judges qwen2.5-coder-1.5b,smollm2-135m] [--base-url URL --model NAME]

Each pair (prompt, preferred answer, other answer) goes through the `Judge` stage exactly as the ultrafeedback
recipe runs it, in each mode:
- hh: the first N pairs of ../shared/data/real/hh_rlhf_harmless_base_test.jsonl.gz (human harmlessness labels);
- graded: bench/graded_pairs.py (an AlpacaEval answer vs the same answer truncated, off-topic, with wrong numbers,
  a refusal, the question echoed, or looping).
Per judge, set and mode it prints: agreement (ties count a half) with a 95% bootstrap interval, ties, agreement
of the sampled rating or verdict (without logprobs), agreement between the two orders (pairwise), the share of
first-position wins (pairwise, sampled verdicts), parse failures, seconds per pair. Answers are cached in
$TMPDIR/judge-agreement/requests.sqlite, so a rerun (or another table from the same answers) costs nothing.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from graded_pairs import graded_pairs  # noqa: E402

from pipelines.core.stage import Context  # noqa: E402
from pipelines.stages.pairs import COMPLETIONS  # noqa: E402
from pipelines.stages.judge import Judge  # noqa: E402
from pipelines.stages.ingest import Ingest  # noqa: E402
from pipelines.teacher.client import Teacher  # noqa: E402
from pipelines.teacher.config import TeacherConfig  # noqa: E402
from pipelines.teacher.server import EmbeddedConfig  # noqa: E402

HH = ROOT.parent / "shared" / "data" / "real" / "hh_rlhf_harmless_base_test.jsonl.gz"


def hh_pairs(n: int) -> list[dict]:
    ctx = Context(run_dir=Path(tempfile.mkdtemp()), config=None)
    frame = pl.concat(list(Ingest(sources=(f"{HH}?max_rows={n}",), kind="preference").read(ctx)))
    if "drop_reason" in frame.columns:
        frame = frame.filter(pl.col("drop_reason").is_null())
    return [{"prompt": p, "preferred": c[-1]["content"], "other": r[-1]["content"], "rule": "human"}
            for p, c, r in zip(frame["prompt"], frame["chosen"].to_list(), frame["rejected"].to_list())]


def rows(pairs: list[dict]) -> pl.DataFrame:
    completions = [[{"model": "preferred", "principle": None, "content": p["preferred"], "ratings": [],
                     "overall": None},
                    {"model": "other", "principle": None, "content": p["other"], "ratings": [], "overall": None}]
                   for p in pairs]
    return pl.DataFrame({"prompt": [p["prompt"] for p in pairs]}).with_columns(
        pl.Series("completions", completions, dtype=COMPLETIONS))


def interval(outcomes: list[float], rounds: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of the mean."""
    if not outcomes:
        return float("nan"), float("nan")
    rng = random.Random(0)
    means = sorted(sum(rng.choices(outcomes, k=len(outcomes))) / len(outcomes) for _ in range(rounds))
    return means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


def outcome(a: float | None, b: float | None) -> float | None:
    """1 when the preferred answer scores higher, 0 lower, 0.5 a tie; None when either is unrated."""
    if a is None or b is None:
        return None
    return 1.0 if a > b else 0.0 if a < b else 0.5


def measure(judge: Judge, frame: pl.DataFrame, teacher: Teacher, pairs: list[dict]) -> dict:
    ctx = Context(run_dir=Path(tempfile.mkdtemp()), config=None, clients={"teacher": teacher})
    started = time.monotonic()
    out = judge.process(frame, ctx)
    seconds = time.monotonic() - started
    expected, sampled = [], []
    by_rule: dict[str, list[float]] = {}
    for completions, pair in zip(out["completions"].to_list(), pairs):
        scores = {c["model"]: c for c in completions}
        pref, other = scores.get("preferred"), scores.get("other")
        e = outcome(pref and pref["overall"], other and other["overall"])
        expected.append(e if e is not None else 0.5)  # an unrated pair counts as a tie
        by_rule.setdefault(pair["rule"], []).append(expected[-1])
        side = [c and next((r["rating"] for r in c["ratings"]), None) for c in (pref, other)]
        s = outcome(*side)
        sampled.append(s if s is not None else 0.5)
    counters = ctx.counters
    agreeing, compared = counters["ordering_pairs_agreeing"], counters["ordering_pairs_compared"]
    return {
        "agree": sum(expected) / len(expected), "ci": interval(expected),
        "ties": sum(x == 0.5 for x in expected) / len(expected),
        "sampled": sum(sampled) / len(sampled), "sampled_ties": sum(x == 0.5 for x in sampled) / len(sampled),
        "orders_agree": agreeing / compared if compared else None,
        "first_wins": counters["judge_first_wins"] / counters["judge_verdicts"] if counters["judge_verdicts"]
        else None,
        "parse_failures": counters["judge_parse_failures"] / max(1, counters["judge_requests"]),
        "s_per_pair": seconds / len(pairs),
        "by_rule": {rule: sum(v) / len(v) for rule, v in sorted(by_rule.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="graded,hh")
    parser.add_argument("--n-graded", type=int, default=240)
    parser.add_argument("--n-hh", type=int, default=300)
    parser.add_argument("--modes", default="pointwise,pairwise")
    parser.add_argument("--judges", default="qwen2.5-coder-1.5b", help="embedded models (ignored with --base-url)")
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--model", default="judge")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    sets = {"graded": lambda: graded_pairs(args.n_graded), "hh": lambda: hh_pairs(args.n_hh)}
    data = {name: sets[name]() for name in args.sets.split(",")}
    work = Path(tempfile.gettempdir()) / "judge-agreement"
    work.mkdir(exist_ok=True)
    judges = [args.model] if args.base_url else args.judges.split(",")
    table = []
    for judge_name in judges:
        config = TeacherConfig(base_url=args.base_url, model=args.model, max_concurrency=args.concurrency,
                               reasks=1, embedded=EmbeddedConfig(model=judge_name, slots=args.concurrency))
        teacher = Teacher(config, work / "requests.sqlite", work / f"{judge_name}.log",
                          log=lambda m: print(m, file=sys.stderr))
        try:
            for set_name, pairs in data.items():
                frame = rows(pairs)
                for mode in args.modes.split(","):
                    result = measure(Judge(mode=mode, orderings=2, max_tokens=96), frame, teacher, pairs)
                    table.append((judge_name, set_name, len(pairs), mode, result))
                    print(f"{judge_name} {set_name} {mode}: {result}", file=sys.stderr)
        finally:
            teacher.close()
    print("\n| judge | set | pairs | mode | agreement (95% CI) | ties | sampled only (ties) | orders agree | "
          "first position wins | parse failures | s/pair |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for judge_name, set_name, n, mode, r in table:
        lo, hi = r["ci"]
        opt = (lambda x: "-" if x is None else f"{x:.2f}")
        print(f"| {judge_name} | {set_name} | {n} | {mode} | {r['agree']:.3f} ({lo:.3f}-{hi:.3f}) | {r['ties']:.2f} | "
              f"{r['sampled']:.3f} ({r['sampled_ties']:.2f}) | {opt(r['orders_agree'])} | {opt(r['first_wins'])} | "
              f"{r['parse_failures']:.3f} | {r['s_per_pair']:.2f} |")
    print("\nagreement by rule (graded set):")
    for judge_name, set_name, n, mode, r in table:
        if set_name == "graded":
            print(f"- {judge_name} {mode}: " + ", ".join(f"{k} {v:.2f}" for k, v in r["by_rule"].items()))


if __name__ == "__main__":
    main()
