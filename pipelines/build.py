"""`python -m pipelines.build RECIPE [--set key=val ...]`: run a recipe end to end under runs/<recipe>/.

Every stage boundary is Parquet under the run dir, so a rerun skips finished stages and a killed run resumes.
User errors print one line and exit 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import time
from pathlib import Path

from pipelines.config import apply_overrides, describe, flat_keys, to_json
from pipelines.errors import ConfigError, PipelineError, describe_os_error
from pipelines.locks import LOCKED, DirLock, Locked
from pipelines.recipes import RECIPES, load_recipe


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise ConfigError(f"{message}; see python -m {self.prog} --help")


def recipe_arguments(p: Parser, set_help: str) -> Parser:
    """The recipe and its `--set KEY=VAL` overrides (build, refresh)."""
    p.add_argument("recipe", help=f"one of: {', '.join(RECIPES)}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VAL", help=set_help)
    return p


def make_parser() -> Parser:
    p = recipe_arguments(Parser(prog="pipelines.build", description="Build a dataset with a recipe."),
                         "override a config key (dotted, e.g. teacher.base_url=http://...); repeatable")
    p.add_argument("--limit", type=int, default=None, help="produce at most N seed rows (a quick trial)")
    p.add_argument("--fresh", action="store_true", help="recompute every stage (cached teacher answers are kept)")
    p.add_argument("--run-dir", type=Path, default=None, help="where to write (default runs/<recipe>)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="where map stages and near-dedup run: here, or on Ray (RAY_ADDRESS, else local; docs/ray.md)")
    p.add_argument("--show-config", action="store_true", help="print the resolved config and its keys, then exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    return p


def build(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe)
    cfg = apply_overrides(recipe.Config(), [s for group in args.overrides for s in group.split()])
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
        return _build_in(run_dir, recipe, cfg, args)


def _build_in(run_dir: Path, recipe, cfg, args: argparse.Namespace) -> int:
    from pipelines.dedup.summary import markdown as dedup_markdown
    from pipelines.dedup.summary import prune as prune_dedup_stats
    from pipelines.dedup.summary import read_stats
    from pipelines.engines import engine_named
    from pipelines.report import judge_summary, print_table, write_report
    from pipelines.runner import TEACHER_STATS, Runner, write_quarantine
    from pipelines.stage import Context
    from pipelines.teacher import Teacher

    if args.fresh:
        for child in run_dir.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
    (run_dir / "config.json").write_text(to_json(cfg))
    log = logging.getLogger("pipelines")
    stages = recipe.stages(cfg)
    check_chain(stages)
    teacher = judge = None  # a recipe without a teacher config (ingest) never starts a server
    say = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    if hasattr(cfg, "teacher"):
        teacher = Teacher(cfg.teacher, run_dir / "requests.sqlite", run_dir / "server.log", log=say)
    if getattr(cfg, "judge", None) is not None and cfg.judge != cfg.teacher:  # else the teacher judges too
        judge = Teacher(cfg.judge, run_dir / "requests.sqlite", run_dir / "judge-server.log", log=say)
    ctx = Context(run_dir=run_dir, config=cfg, teacher=teacher, judge=judge, log=log, limit=args.limit,
                  stages=stages)
    prune_dedup_stats(run_dir, {stage.name for stage in stages})
    started = time.monotonic()
    try:
        rows = Runner(stages, ctx, engine_named(args.engine)).run()
    finally:
        for client in (teacher, judge):
            if client is not None:
                client.close()
    seconds = time.monotonic() - started
    quarantine, quarantined = write_quarantine(run_dir)
    this_run = {key: sum(c.stats.get(key, 0) for c in (teacher, judge) if c) for key in TEACHER_STATS}
    report = write_report(run_dir, args.recipe, rows, seconds, this_run)
    print_table(rows, seconds)
    if judge := judge_summary(rows):
        print(judge)
    print("this run: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in this_run.items()))
    if read_stats(run_dir):
        print(dedup_markdown(run_dir))
    print(f"export: {run_dir / 'export'}   report: {report}   quarantine: {quarantine} ({quarantined} rows)")
    return 0


def check_chain(stages) -> None:
    """Fail before anything runs if a stage requires a column that no earlier stage provides."""
    available: set[str] = set()
    for stage in stages:
        missing = [c for c in stage.requires if c not in available]
        if available and missing:
            raise ConfigError(f"recipe error: stage {stage.name} requires {missing}, which no earlier stage provides")
        available.update(stage.provides)


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through finally blocks, so the teacher server is stopped


def main_guard(command, argv: list[str], clean=str) -> int:
    """Run `command(argv)` as a CLI: logging, SIGTERM as an exit, one-line errors (exit 2, the message passed
    through `clean`) unless --debug, and a `busy:` line with exit 75 when another process holds the directory."""
    debug = "--debug" in argv
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over `ulimit -f`, a write fails (EFBIG) instead of killing us
    try:
        return command(argv)
    except Locked as exc:
        print(f"busy: {exc}", file=sys.stderr)
        return LOCKED
    except PipelineError as exc:
        if debug:
            raise
        return _one_line(clean(exc))
    except MemoryError:
        if debug:
            raise
        return _one_line("out of memory: lower the batch or signature sizes (--show-config lists them) or use a "
                         "machine with more memory; rerun the same command to resume")
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        line = describe_os_error(exc)
        if debug or line is None:
            raise
        return _one_line(clean(line))


def _one_line(message: str) -> int:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    return main_guard(lambda a: build(make_parser().parse_args(a)), sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
