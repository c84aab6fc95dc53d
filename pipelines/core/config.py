"""Recipe configs are frozen dataclasses; `--set key=val` overrides a field, typed from its annotation.

`apply_overrides(UltraChatConfig(), ["turns=2", "teacher.base_url=http://127.0.0.1:8000/v1"])` returns a new
config; an unknown key raises ConfigError listing the valid keys. It then checks the resolved config (`validate`),
before any work, so each of these is one ConfigError line naming the key, the value and what is allowed:

- every int and float field (also `tuple[float, ...]`, `int | None`) declares its range in its metadata, in interval
  notation: `field(default=16, metadata={"help": "...", "range": "[1, 8192]"})`; `(` and `)` leave the end out,
  `inf` leaves the side open: `"(0, 1]"`, `"[0, inf)"`. A value outside it, NaN or infinity is refused; a tuple
  needs at least one value, each in range. A test checks that every numeric field has one.
- a field may list its `"choices"` (a tuple of the values allowed);
- a field may name a `"check"`: a function of the value returning what is wrong with it, or None;
- a recipe's config may define `cross_check(self) -> str | None` for rules across its fields.

A group typed `Group | None` with a None default is off: setting any of its keys (`second_judge.model=...`) turns it
on with the group's defaults for the rest; `second_judge=none` turns it off again.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from typing import Any, Iterator

from pipelines.core.errors import ConfigError

INTERVAL = re.compile(r"([\[(])\s*([-+\w.]+)\s*,\s*([-+\w.]+)\s*([\])])")


@dataclasses.dataclass(frozen=True)
class Range:
    """An interval parsed from interval notation, e.g. `Range.parse("(0, 1]")`."""

    lo: float
    hi: float
    lo_open: bool
    hi_open: bool
    lo_text: str
    hi_text: str

    @classmethod
    def parse(cls, text: str) -> "Range":
        match = INTERVAL.fullmatch(text.strip())
        if not match:
            raise ValueError(f"range {text!r} is not in interval notation, e.g. [1, 128], (0, 1] or [0, inf)")
        left, lo, hi, right = match.groups()
        return cls(float(lo), float(hi), left == "(", right == ")", lo, hi)

    def __contains__(self, x: float) -> bool:  # NaN fails every comparison; `inf)` leaves infinity out
        return (self.lo < x if self.lo_open else self.lo <= x) and (x < self.hi if self.hi_open else x <= self.hi)

    def __str__(self) -> str:
        return f"{'(' if self.lo_open else '['}{self.lo_text}, {self.hi_text}{')' if self.hi_open else ']'}"

    def words(self) -> str:
        """`between 1 and 128`, `at least 0`, `greater than 0 and at most 1`, ..."""
        low = "" if self.lo == -float("inf") else f"{'greater than' if self.lo_open else 'at least'} {self.lo_text}"
        high = "" if self.hi == float("inf") else f"{'less than' if self.hi_open else 'at most'} {self.hi_text}"
        if low.startswith("at least") and high.startswith("at most"):
            return f"between {self.lo_text} and {self.hi_text}"
        return " and ".join(p for p in (low, high) if p) or "a number"


def temperature_setting(default: float = 0.7):
    """A sampling temperature field, as every teacher stage declares it."""
    return dataclasses.field(default=default, metadata={"help": "sampling temperature", "range": "[0, 2]"})


def top_p_setting(default: float = 0.9):
    return dataclasses.field(default=default, metadata={"help": "nucleus sampling: top_p of the probability mass",
                                                        "range": "(0, 1]"})


def max_tokens_setting(default: int, help_text: str):
    """A field bounding the tokens of one answer."""
    return dataclasses.field(default=default, metadata={"help": help_text, "range": "[1, 1000000]"})


def leaves(config: Any, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any, Any]]:
    """(dotted key, field, type annotation, value) of every setting of a (nested) config dataclass."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            yield from leaves(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, hints[f.name], value


def flat_keys(config: Any, prefix: str = "") -> dict[str, Any]:
    """`{"turns": 3, "teacher.model": "...", ...}` for a (nested) config dataclass."""
    return {key: value for key, _, _, value in leaves(config, prefix)}


def is_numeric(annotation: Any) -> bool:
    """int or float, alone, optional (`int | None`) or as the items of a tuple or list; bool is not a number."""
    args = [a for a in typing.get_args(annotation) if a is not type(None) and a is not Ellipsis]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, tuple, list):
        return len(args) == 1 and is_numeric(args[0])
    return annotation in (int, float)


def field_range(f: dataclasses.Field) -> Range | None:
    return Range.parse(f.metadata["range"]) if "range" in f.metadata else None


NONE_TEXTS = ("", "none", "null")  # what `--set key=...` takes as None for an optional setting


def _convert(text: str, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        if text.lower() in NONE_TEXTS:
            return None
        return _convert(text, args[0], key)
    if origin in (tuple, list):
        items = [t.strip() for t in text.split(",") if t.strip()]
        return tuple(_convert(t, args[0] if args else str, key) for t in items)
    try:
        if annotation is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if annotation in (int, float):
            return annotation(text)
    except ValueError:
        raise ConfigError(f"--set {key}={text}: expected {annotation.__name__}") from None
    return text


def apply_overrides(config: Any, assignments: list[str]) -> Any:
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {assignment!r}")
        config = _set(config, key.split("."), text, key)
    validate(config)
    return config


def _set(config: Any, path: list[str], text: str, full_key: str) -> Any:
    hints = typing.get_type_hints(type(config))
    if path[0] not in hints:
        valid = ", ".join(sorted(flat_keys(config)))
        raise ConfigError(f"unknown config key {full_key!r}; valid keys: {valid}")
    current = getattr(config, path[0])
    group = optional_group(hints[path[0]])
    if group is not None and len(path) == 1 and text.lower() in NONE_TEXTS:
        return dataclasses.replace(config, **{path[0]: None})
    if current is None and group is not None:  # an optional group, off: a key of it turns it on with its defaults
        if len(path) == 1:
            raise ConfigError(f"{full_key} is a group, off by default; turn it on by setting one of its keys, "
                              f"e.g. {full_key}.{dataclasses.fields(group)[0].name}=...")
        current = group()
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"unknown config key {full_key!r}: {path[0]} has no sub-keys")
        value = _set(current, path[1:], text, full_key)
    elif dataclasses.is_dataclass(current):
        raise ConfigError(f"{full_key} is a group; set one of its keys, e.g. {full_key}.{dataclasses.fields(current)[0].name}=...")
    else:
        value = _convert(text, hints[path[0]], full_key)
    return dataclasses.replace(config, **{path[0]: value})


def optional_group(annotation: Any) -> type | None:
    """The dataclass of a `Group | None` setting (a group that is off unless one of its keys is set), else None."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and dataclasses.is_dataclass(args[0]) and len(typing.get_args(annotation)) == 2:
            return args[0]
    return None


def set_flag(key: str) -> str:
    """How a build or refresh user sets `key`: `--set key`."""
    return f"--set {key}"


def validate(config: Any, flag=set_flag) -> None:
    """Raise ConfigError (one line) for the first setting outside its range or failing its check, then for the
    config's `cross_check` problem. Run on every resolved config, before any work. `flag(key)` names the setting
    as the user typed it (`--set key` for recipes, `--key` for train)."""
    for key, f, _, value in leaves(config):
        allowed = field_range(f)
        many = isinstance(value, (tuple, list))
        shown = ",".join(str(v) for v in value) if many else value
        if allowed is not None and value is not None:
            if many and not value:
                raise ConfigError(f"{flag(key)}=: give at least one value, each {allowed.words()}")
            if not all(v in allowed for v in (value if many else (value,))):
                each = "each value " if many else ""
                raise ConfigError(f"{flag(key)}={shown}: {each}must be {allowed.words()}")
        if "choices" in f.metadata and value not in f.metadata["choices"]:
            raise ConfigError(f"{flag(key)}={shown}: expected one of {', '.join(f.metadata['choices'])}")
        if "check" in f.metadata and (problem := f.metadata["check"](value)):
            raise ConfigError(f"{flag(key)}={shown}: {problem}")
    if hasattr(config, "cross_check") and (problem := config.cross_check()):
        raise ConfigError(problem)


def allowed_values(f: dataclasses.Field) -> str:
    """`[1, 64]`, `{listwise, pointwise, pairwise}` or '' : what --help and --show-config print after a key."""
    if (allowed := field_range(f)) is not None:
        return str(allowed)
    return "{" + ", ".join(f.metadata["choices"]) + "}" if "choices" in f.metadata else ""


def describe(config: Any) -> str:
    """One line per key, `  key [range]: help`, as --show-config lists them."""
    lines = []
    for key, f, _, _ in leaves(config):
        help_text, shown = f.metadata.get("help"), allowed_values(f)
        lines.append(f"  {key}" + (f" {shown}" if shown else "") + (f": {help_text}" if help_text else ""))
    return "\n".join(lines)


def to_json(config: Any) -> str:
    return json.dumps(dataclasses.asdict(config), indent=2, default=str)
