"""What every command shares: argument errors as one line, SIGTERM as an exit, user errors without a traceback.

`python -m pipelines.build|refresh|publish|llama|train` each parse their arguments with `Parser` and run under
`main_guard`; a recipe's settings are listed with their help and allowed range by `--show-config`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import typing

from pipelines.core.config import allowed_values
from pipelines.core.errors import ConfigError, PipelineError, describe_os_error
from pipelines.core.locks import LOCKED, Locked
from pipelines.recipes import load_recipe, names


def recipes_epilog(refreshable: bool = False) -> str:
    """The recipes (those that can be refreshed), one line each, for a command's --help."""
    recipes = [load_recipe(name) for name in names()]
    lines = [f"  {r.name:<14} {r.summary}" for r in recipes if not refreshable or r.refresh is not None]
    return ("recipes:\n" + "\n".join(lines) + "\n\npython -m pipelines.build RECIPE --show-config lists a recipe's "
            "settings with their help and allowed range.")


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise ConfigError(f"{message}; see python -m {self.prog} --help")


def recipe_arguments(p: Parser, set_help: str) -> Parser:
    """The recipe and its `--set KEY=VAL` overrides (build, refresh)."""
    p.add_argument("recipe", help=f"one of: {', '.join(names())}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VAL", help=set_help)
    return p


METAVARS = {int: "N", float: "F", str: "TEXT"}


def add_option_flags(parser: argparse.ArgumentParser, cls: type, positional: tuple[str, ...] = ()) -> None:
    """One argument per field of the dataclass `cls` (`learning_rate` -> `--learning-rate`, a bool -> `--lora` and
    `--no-lora`), its help the field's help, allowed range or choices, and default; the fields in `positional` are
    positional."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        help_text = f.metadata["help"] + (f"; allowed {allowed}" if (allowed := allowed_values(f)) else "")
        if f.name in positional:
            parser.add_argument(f.name, metavar=f.name.upper(), help=help_text)
            continue
        flag, kind = "--" + f.name.replace("_", "-"), hints[f.name]
        if kind is bool:  # --flag and --no-flag
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
            continue
        kind = next(t for t in typing.get_args(kind) if t is not type(None)) if typing.get_args(kind) else kind
        if f.default is not None:
            help_text += f"; default {f.default}"
        parser.add_argument(flag, type=kind, default=f.default, metavar=f.metadata.get("metavar", METAVARS[kind]),
                            help=help_text)


def option_flag(key: str) -> str:
    """How a train user sets `key`: `--learning-rate`."""
    return "--" + key.replace("_", "-")


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
    except BaseExceptionGroup as group:  # an asyncio.TaskGroup's failure: its first error is the one to report
        first = group
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        return main_guard(lambda _: _raise(first), argv, clean)
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


def _raise(exc: BaseException):
    raise exc


def _one_line(message: str) -> int:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2
