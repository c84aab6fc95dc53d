"""The run report: `runs/<recipe>/report.json` and the table printed at the end of every run."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipelines.core.files import write_json
from pipelines.dedup.summary import sections


def write_report(run_dir: Path, recipe: str, rows: list[dict], seconds: float, this_run: dict,
                 command: list[str] | None = None) -> Path:
    """`stages` holds whole-stage totals (a skipped stage keeps what it cost when it ran); `this_run` holds what
    this invocation sent to the teacher, so a rerun that does no work shows 0 requests there; `command` builds the
    run again."""
    report = {"recipe": recipe, "seconds": round(seconds, 2), "this_run": this_run, "stages": rows,
              **({"command": command} if command else {})}
    if judge := judge_summary(rows):
        report["judge"] = judge
    found = sections(rows)
    if dedup := {k: v for k, v in found.items() if k in ("near", "decontamination", "leakage")}:
        report["dedup"] = dedup
    return write_json(run_dir / "report.json", report)


def print_table(rows: list[dict], seconds: float) -> None:
    table = Table(title=f"run finished in {seconds:.1f}s")
    left = ("stage", "status", "dropped (by reason)", "events")
    for col in ("stage", "status", "in", "dropped (by reason)", "out", "events", "seconds", "requests", "cache hits",
                "retries", "tokens in/out", "cost"):
        table.add_column(col, justify="left" if col in left else "right")
    for r in rows:
        drops = "\n".join(f"{k}: {v}" for k, v in sorted(r["dropped"].items())) or "-"
        happened = {k: v for k, v in {**r.get("counters", {}), **r.get("teacher_events", {})}.items()
                    if "|" not in k}  # `what|detail` counters are details the stage's summary presents
        events = "\n".join(f"{k}: {v}" for k, v in sorted(happened.items())) or "-"
        table.add_row(r["stage"], r["status"], str(r["rows_in"]), drops, str(r["rows_out"]), events,
                      f"{r['seconds']:.1f}", str(r["requests"]), str(r["cache_hits"]), str(r["retries"]),
                      f"{r['tokens_in']}/{r['tokens_out']}", f"{r.get('cost', 0):.4f}" if r.get("cost") else "-")
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def judge_summary(rows: list[dict]) -> str | None:
    """One line on the judge of a feedback recipe: unreadable answers and agreement between orderings."""
    judge = sections(rows).get("judge")
    if not judge or not judge["requests"]:
        return None
    requests, failed = judge["requests"], judge["parse_failures"]
    same, compared = judge["pairs_agreeing"], judge["pairs_compared"]
    agreement = f"{same / compared:.3f} ({same} of {compared} completion pairs)" if compared else "-"
    return (f"judge: {failed} of {requests} answers unreadable after re-asks ({failed / requests:.3f}); "
            f"agreement between orderings {agreement}")
