"""Recipe configs are frozen dataclasses; `--set key=val` overrides a field, typed from its annotation.

`apply_overrides(UltraChatConfig(), ["turns=2", "teacher.base_url=http://127.0.0.1:8000/v1"])` returns a new
config; an unknown key raises ConfigError listing the valid keys.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

from pipelines.errors import ConfigError


def flat_keys(config: Any, prefix: str = "") -> dict[str, Any]:
    """`{"turns": 3, "teacher.model": "...", ...}` for a (nested) config dataclass."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flat_keys(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def _convert(text: str, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("", "none", "null"):
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
    return config


def _set(config: Any, path: list[str], text: str, full_key: str) -> Any:
    hints = typing.get_type_hints(type(config))
    if path[0] not in hints:
        valid = ", ".join(sorted(flat_keys(config)))
        raise ConfigError(f"unknown config key {full_key!r}; valid keys: {valid}")
    current = getattr(config, path[0])
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"unknown config key {full_key!r}: {path[0]} has no sub-keys")
        value = _set(current, path[1:], text, full_key)
    elif dataclasses.is_dataclass(current):
        raise ConfigError(f"{full_key} is a group; set one of its keys, e.g. {full_key}.{dataclasses.fields(current)[0].name}=...")
    else:
        value = _convert(text, hints[path[0]], full_key)
    return dataclasses.replace(config, **{path[0]: value})


def to_json(config: Any) -> str:
    return json.dumps(dataclasses.asdict(config), indent=2, default=str)
