"""Which embedded model should be the default teacher: the judge's view of ultrachat exports made by each.

    python bench/teacher_choice.py RUN_DIR [RUN_DIR ...] [--judge qwen2.5-coder-1.5b] [--max-dialogues 40]

For each finished `python -m pipelines.build ultrachat --run-dir RUN_DIR` it prints the teacher, the build's time
(the sum of its stages' seconds), seeds in, dialogues kept by the guards, and the embedded judge's pointwise rating
(1-9, expected over its digit probabilities, as the ultrafeedback recipe rates) of every assistant turn of the kept
dialogues, as a mean with a 95% bootstrap interval. Judge answers are cached in $TMPDIR/teacher-choice.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from judge_agreement import interval  # noqa: E402

from pipelines.prompts.ultrafeedback import point_request, point_score  # noqa: E402
from pipelines.teacher.client import Teacher  # noqa: E402
from pipelines.teacher.config import TeacherConfig  # noqa: E402
from pipelines.teacher.server import EmbeddedConfig  # noqa: E402


def turns(run_dir: Path, limit: int) -> list[tuple[str, str]]:
    """(user turn, assistant answer) of the first `limit` exported dialogues, every exchange."""
    frame = pl.read_parquet(sorted((run_dir / "export" / "data").glob("*.parquet")))
    frame = frame.unique("prompt_id", keep="first", maintain_order=True).head(limit)
    out = []
    for messages in frame["messages"].to_list():
        for ask, answer in zip(messages, messages[1:]):
            if ask["role"] == "user" and answer["role"] == "assistant":
                out.append((ask["content"], answer["content"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--judge", default="qwen2.5-coder-1.5b")
    parser.add_argument("--max-dialogues", type=int, default=40)
    args = parser.parse_args()
    work = Path(tempfile.gettempdir()) / "teacher-choice"
    work.mkdir(exist_ok=True)
    judge = Teacher(TeacherConfig(max_concurrency=4, embedded=EmbeddedConfig(model=args.judge)),
                    work / "requests.sqlite", work / "judge.log", log=lambda m: print(m, file=sys.stderr))
    rows = []
    try:
        for run in args.runs:
            report = json.loads((run / "report.json").read_text())
            config = json.loads((run / "config.json").read_text()) if (run / "config.json").exists() else {}
            teacher = config.get("teacher", {}).get("embedded", {}).get("model", "?")
            stages = report["stages"]
            pairs = turns(run, args.max_dialogues)
            results = judge.chat_many([point_request(q, a) for q, a in pairs], desc=run.name)
            ratings = [point_score(r)[0] for r in results if r.error is None]
            lo, hi = interval(ratings)
            rows.append((run.name, teacher, report["seconds"], stages[0]["rows_out"],
                         stages[-1]["rows_out"], len(ratings), sum(ratings) / max(1, len(ratings)), lo, hi))
    finally:
        judge.close()
    print("\n| run | teacher | build seconds | seeds | dialogues kept | answers rated | judge rating (95% CI) |")
    print("|---|---|---|---|---|---|---|")
    for name, teacher, seconds, seeds, kept, n, mean, lo, hi in rows:
        print(f"| {name} | {teacher} | {seconds:.0f} | {seeds} | {kept} ({kept / seeds:.0%}) | {n} | "
              f"{mean:.2f} ({lo:.2f}-{hi:.2f}) |")


if __name__ == "__main__":
    main()
