"""How often our judge agrees with human preference labels: hh-rlhf harmless-base test pairs, chosen vs rejected.

    python bench/judge_agreement.py [N] [--base-url URL --model NAME]

Reads the first N pairs (default 24) of ../shared/data/real/hh_rlhf_harmless_base_test.jsonl.gz with our ingest,
shows each pair's two answers to the `Judge` stage exactly as the ultrafeedback recipe does (every aspect, two
orderings, ratings averaged), and prints a table: share of pairs where the human-chosen answer scores higher
(overall score and mean of aspects), ties, pairs the judge could not rate, unreadable answers, agreement between
orderings. With no --base-url the embedded SmolLM2-135M server is started.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.stage import Context  # noqa: E402
from pipelines.stages.feedback import COMPLETIONS, Judge, score  # noqa: E402
from pipelines.stages.ingest import Ingest  # noqa: E402
from pipelines.teacher import Teacher, TeacherConfig  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "real" / "hh_rlhf_harmless_base_test.jsonl.gz"


def pairs(n: int) -> pl.DataFrame:
    ctx = Context(run_dir=Path(tempfile.mkdtemp()), config=None)
    frame = pl.concat(list(Ingest(sources=(f"{DATA}?max_rows={n}",), kind="preference").read(ctx)))
    frame = frame.filter(pl.col("drop_reason").is_null()) if "drop_reason" in frame.columns else frame
    completions = [[{"model": "human-chosen", "principle": None, "content": c[-1]["content"], "ratings": [],
                     "overall": None},
                    {"model": "human-rejected", "principle": None, "content": r[-1]["content"], "ratings": [],
                     "overall": None}] for c, r in zip(frame["chosen"].to_list(), frame["rejected"].to_list())]
    return frame.select("prompt").with_columns(pl.Series("completions", completions, dtype=COMPLETIONS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=24)
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--max-tokens", type=int, default=160)
    args = parser.parse_args()
    rows = pairs(args.n)
    work = Path(tempfile.gettempdir()) / "judge-agreement"  # a fixed place: a rerun takes its answers from the cache
    work.mkdir(exist_ok=True)
    teacher = Teacher(TeacherConfig(base_url=args.base_url, model=args.model, max_concurrency=16),
                      work / "requests.sqlite", work / "server.log", log=lambda m: print(m, file=sys.stderr))
    ctx = Context(run_dir=work, config=None, teacher=teacher)
    started = time.monotonic()
    try:
        out = Judge(orderings=2, max_tokens=args.max_tokens).process(rows, ctx)
    finally:
        teacher.close()
    seconds = time.monotonic() - started
    rated = out.filter(pl.col("drop_reason").is_null() & (pl.col("completions").list.len() == 2))
    table = {}
    for how in ("overall", "mean_aspects"):
        wins = ties = 0
        for completions in rated["completions"].to_list():
            chosen, rejected = score(completions[0], how), score(completions[1], how)
            wins += chosen > rejected
            ties += chosen == rejected
        table[how] = (wins, ties)
    requests, failures = ctx.counters["judge_requests"], ctx.counters["judge_parse_failures"]
    agreement = rated["ordering_agreement"].drop_nulls()
    print(f"\njudge {args.model} at {args.base_url or 'embedded'}; {rows.height} hh-rlhf harmless-base test pairs; "
          f"{seconds:.0f} s\n")
    print("| measure | value |\n|---|---|")
    print(f"| pairs rated (both answers) | {rated.height} of {rows.height} |")
    for how, (wins, ties) in table.items():
        share = wins / rated.height if rated.height else float("nan")
        print(f"| chosen scores higher ({how}) | {wins} ({share:.3f}); ties {ties} |")
        print(f"| ... over all {rows.height} pairs (unrated count as misses) | {wins / rows.height:.3f} |")
    print(f"| judge answers unreadable after re-asks | {failures} of {requests} ({failures / max(1, requests):.3f}) |")
    print(f"| re-asks | {teacher.stats['reasks']} |")
    print(f"| mean agreement between the two orderings | "
          f"{agreement.mean() if len(agreement) else float('nan'):.3f} over {len(agreement)} pairs |")


if __name__ == "__main__":
    main()
