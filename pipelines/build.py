"""`python -m pipelines.build RECIPE [--set key=val ...]`: run a recipe end to end under runs/<recipe>/.

Every stage boundary is Parquet under the run dir, so a rerun skips finished stages and a killed run resumes.
User errors print one line and exit 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import sys
import time
from pathlib import Path

from pipelines.cli import Parser, main_guard, recipe_arguments, recipes_epilog
from pipelines.core.config import apply_overrides, describe, flat_keys, to_json
from pipelines.core.errors import ConfigError
from pipelines.core.locks import DirLock
from pipelines.recipes import load_recipe


def make_parser() -> Parser:
    p = recipe_arguments(Parser(prog="pipelines.build", description="Build a dataset with a recipe.",
                                epilog=recipes_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter),
                         "override a config key (dotted, e.g. teacher.base_url=http://...); repeatable")
    p.add_argument("--limit", type=int, default=None, help="produce at most N seed rows (a quick trial)")
    p.add_argument("--fresh", action="store_true", help="recompute every stage (cached teacher answers are kept)")
    p.add_argument("--run-dir", type=Path, default=None, help="where to write (default runs/<recipe>)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="where map stages and near-dedup run: here, or on Ray (RAY_ADDRESS, else local; docs/ray.md)")
    p.add_argument("--show-config", action="store_true", help="print the resolved config and its keys, then exit")
    p.add_argument("--dry-run", action="store_true",
                   help="estimate what each teacher stage would send (requests, tokens, cost); send and keep nothing")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    return p


def build(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe)
    cfg = apply_overrides(recipe.config(), [s for group in args.overrides for s in group.split()])
    if args.show_config:  # the config was checked by apply_overrides: an out-of-range --set is an error here too
        print(to_json(cfg))
        print("keys:", ", ".join(flat_keys(cfg)))
        print("key [allowed range]: help\n" + describe(cfg))
        return 0
    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    run_dir = args.run_dir or Path("runs") / args.recipe
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--run-dir {run_dir} is a file, not a directory: choose another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    with DirLock(run_dir / ".lock", f"build of {args.recipe} in {run_dir}"):  # before anything is written
        return _dry_run(run_dir, recipe, cfg, args) if args.dry_run else _build_in(run_dir, recipe, cfg, args)


def _dry_run(run_dir: Path, recipe, cfg, args: argparse.Namespace) -> int:
    """Run the recipe in a scratch folder with teachers that count instead of sending: per teacher stage, the
    requests its input rows make that the run's cache cannot answer, their tokens and worst-case cost. Stages after
    the first one that needs the teacher see only the rows whose requests are cached: their counts are lower bounds."""
    import tempfile

    from pipelines.core.runner import Runner
    from pipelines.engines import engine_named
    from pipelines.teacher.senders import DryRun

    stages = recipe.stages(cfg)
    check_chain(stages)
    scratch = Path(tempfile.mkdtemp(prefix=".dry-run-", dir=run_dir))
    clients, ctx = _clients_and_context(recipe, cfg, stages, run_dir, scratch, args.limit, log=lambda m: None)
    for client in clients.values():
        client.sender = DryRun()
    try:
        Runner(stages, ctx, engine_named("local")).run()
    finally:
        for client in clients.values():
            client.close()
        shutil.rmtree(scratch, ignore_errors=True)
    print(estimate_table(stages, clients))
    return 0


def estimate_table(stages, clients: dict) -> str:
    """The dry run's table: one row per stage and role that would ask a teacher."""
    lines = ["| stage | role | requests to send | cached | prompt tokens | completion tokens (at most) | "
             "cost online (at most) | cost batch (at most) |", "|---|---|---|---|---|---|---|---|"]
    unknown = False
    for stage in stages:
        asked = [(role, desc, row) for role, client in clients.items() for desc, row in client.sender.rows.items()
                 if desc == stage.name or desc.startswith(stage.name + ":")]  # a stage may name its asks `name: ...`
        if unknown and getattr(stage, "uses_teacher", False) and not asked:
            lines.append(f"| {stage.name} | {stage.teacher_role} | not known: its rows come from answers not yet "
                         f"given | - | - | - | - | - |")
        bound = "at least " if unknown else ""
        lines += [f"| {desc} | {role} | {bound}{row['requests']:,} | {row['cached']:,} | {row['prompt_tokens']:,} | "
                  f"{row['completion_tokens']:,} | {row['cost']:.4f} | {row['cost_batch']:.4f} |"
                  for role, desc, row in asked]
        unknown = unknown or any(row["requests"] for _, _, row in asked)
    if len(lines) == 2:
        return "no teacher stage would send anything: every request is cached (or the recipe asks no teacher)"
    return "\n".join(lines) + ("\n\nA stage after one that must ask sees only the rows already answered: its numbers "
                               "are lower bounds. Costs need teacher.price_in/price_out." if unknown else "")


SERVER_LOGS = {"teacher": "server.log", "judge": "judge-server.log", "embedder": "embedder-server.log"}


def _clients_and_context(recipe, cfg, stages, run_dir: Path, work_dir: Path, limit: int | None, log):
    """The recipe's teachers (one per role, on the run's request cache, server logs under `work_dir`) and the
    context its stages run in, writing under `work_dir`."""
    from pipelines.core.stage import Context
    from pipelines.teacher.client import Teacher

    log_of = lambda role: work_dir / SERVER_LOGS.get(role, f"{role}-server.log")  # noqa: E731
    clients = {role: Teacher(config, run_dir / "requests.sqlite", log_of(role), log=log, role=role)
               for role, config in recipe.clients(cfg).items()}  # none (ingest): no server ever starts
    ctx = Context(run_dir=work_dir, config=cfg, clients=clients, log=logging.getLogger("pipelines"), limit=limit,
                  stages=stages)
    return clients, ctx


def _build_in(run_dir: Path, recipe, cfg, args: argparse.Namespace) -> int:
    from pipelines.dedup.summary import markdown as dedup_markdown
    from pipelines.dedup.summary import sections
    from pipelines.engines import engine_named
    from pipelines.release.report import judge_summary, print_table, write_report
    from pipelines.core.files import write_text
    from pipelines.core.quarantine import write_quarantine
    from pipelines.core.runner import TEACHER_STATS, Runner
    from pipelines.release.cards import write_card

    if args.fresh:
        for child in run_dir.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
    write_text(run_dir / "config.json", to_json(cfg))
    stages = recipe.stages(cfg)
    check_chain(stages)
    clients, ctx = _clients_and_context(recipe, cfg, stages, run_dir, run_dir, args.limit,
                                        log=lambda msg: print(msg, file=sys.stderr))
    started = time.monotonic()
    try:
        rows = Runner(stages, ctx, engine_named(args.engine)).run()
    finally:
        for client in clients.values():
            client.close()
    write_card(recipe, cfg, run_dir, stages, rows)
    seconds = time.monotonic() - started
    quarantine, quarantined = write_quarantine(run_dir)
    this_run = {key: sum(c.stats.get(key, 0) for c in clients.values()) for key in TEACHER_STATS}
    report = write_report(run_dir, recipe.name, rows, seconds, this_run, rebuild_command(args, run_dir))
    print_table(rows, seconds)
    if judge := judge_summary(rows):
        print(judge)
    print("this run: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in this_run.items()))
    if dedup := {k: v for k, v in sections(rows).items() if k in ("near", "decontamination", "leakage")}:
        print(dedup_markdown(dedup))
    print(f"export: {run_dir / 'export'}   report: {report}   quarantine: {quarantine} ({quarantined} rows)")
    if empty := empty_export_warning(run_dir, rows):
        print(empty, file=sys.stderr)
    return 0


def empty_export_warning(run_dir: Path, rows: list[dict]) -> str | None:
    """One line when the export holds no rows, naming the stage that dropped the last of them and why."""
    from pipelines.release.cards import export_counts

    if export_counts(run_dir / "export"):
        return None
    last = next((r for r in rows if r.get("rows_in") and not r.get("rows_out")), None)
    why = (f" ({last['stage']} dropped all {last['rows_in']}: "
           + ", ".join(f"{k} {v}" for k, v in (last.get("dropped") or {}).items()) + ")") if last else ""
    return f"warning: the export holds no rows{why}; there is nothing to train on or publish"


def rebuild_command(args: argparse.Namespace, run_dir: Path) -> list[str]:
    """This build as a command that builds the same run again (the review app shows it: labels reach the export at
    the next build); a URL's user:password is left out."""
    command = ["python", "-m", "pipelines.build", args.recipe, "--run-dir", str(run_dir.resolve())]
    if args.engine != "local":
        command += ["--engine", args.engine]
    if args.limit is not None:
        command += ["--limit", str(args.limit)]
    for group in args.overrides:
        for item in group.split():
            command += ["--set", re.sub(r"://[^/@\s]*@", "://", item)]
    return command


def check_chain(stages) -> None:
    """Fail before anything runs if a stage requires a column that no earlier stage provides."""
    available: set[str] = set()
    for stage in stages:
        missing = [c for c in stage.requires if c not in available]
        if available and missing:
            raise ConfigError(f"recipe error: stage {stage.name} requires {missing}, which no earlier stage provides")
        available.update(stage.provides)


def main(argv: list[str] | None = None) -> int:
    return main_guard(lambda a: build(make_parser().parse_args(a)), sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
