"""Configuration: one dataclass per stage, defaults in code, a TOML file over them, overrides last.

Design choices
- Each stage module owns its config dataclass (``DataConfig`` in ``onerec.data``, ``ModelConfig`` in
  ``onerec.model`` ...). This module only knows how to fill a dataclass from plain values and checks it.
- A TOML file holds one table per stage (``[data]``, ``[tokenizer]``, ``[model]`` ...). A command reads its
  own table with :func:`load_section`; the pipeline reads them all.
- Overrides are ``section.key=value`` strings (``--set model.d_model=128``); the value is parsed as a TOML
  value when it can be (``3``, ``0.5``, ``true``, ``[1, 2]``, ``"x"``) and taken as a bare string otherwise.
- Unknown keys and wrong types are errors (:class:`ConfigError`, one line naming the key), never ignored.
  Validation beyond types belongs in each dataclass's ``__post_init__`` (raise ``ConfigError`` there).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


def _check_value(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` converted to type ``tp`` (only lossless conversions), or raise ConfigError."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: {value!r} is not a valid {_type_name(tp)}")
    if origin is typing.Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_check_value(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_check_value(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        key_tp, val_tp = get_args(tp) or (str, Any)
        return {_check_value(k, key_tp, where): _check_value(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a path string, got {value!r}")
        return Path(value)
    raise ConfigError(f"{where}: unsupported config type {tp!r}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise :class:`ConfigError`."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]} (known: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _check_value(value, hints[name], key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where or cls.__name__}: {err}") from None


def to_dict(obj: Any) -> Any:
    """A dataclass config as plain JSON/TOML-ready values (Paths as strings, tuples as lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"model.d_model=128"`` -> (["model", "d_model"], 128). Values parse as TOML, else as a string."""
    text = text.removeprefix("--")
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    if isinstance(value, (dt.date, dt.time)):  # a bare 2022-05-06 is a TOML date; configs hold dates as strings
        value = raw.strip()
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of the nested dict ``raw`` with each ``a.b.c=value`` override set."""
    out = json.loads(json.dumps(raw, default=str))
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part} is a value, not a table")
            node = child
        node[path[-1]] = value
    return out


def read_toml(path: str | Path | None) -> dict[str, Any]:
    """Read a TOML file into a dict ({} for None); a missing or malformed file is a ConfigError."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None


# Every config section a stage reads (one dataclass each); an override naming another section is a typo.
SECTIONS = frozenset(
    {"data", "embed", "tokenizer", "model", "train", "eval", "sasrec", "reward", "align", "serve", "simulate", "pipeline"}
)


def load_section(
    cls: type[T],
    section: str,
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> T:
    """Load table ``[section]`` of the TOML file at ``path`` into ``cls``, after ``section.key=value`` overrides.

    Overrides for other sections are ignored here (the pipeline applies them to their own stage); other
    tables of the file are not read. Overrides without a section (``key=value``) apply to this section.
    """
    raw = read_toml(path)
    mine = []
    for text in overrides:
        key_path, _ = parse_override(text)
        if len(key_path) > 1 and key_path[0] not in SECTIONS | {section}:
            known = ", ".join(sorted(SECTIONS))
            raise ConfigError(f"override {text.removeprefix('--')!r}: unknown section {key_path[0]!r} (known: {known})")
        if len(key_path) == 1:
            mine.append(f"{section}.{text.removeprefix('--')}")
        elif key_path[0] == section:
            mine.append(text)
    raw = apply_overrides(raw, mine)
    table = raw.get(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] must be a table")
    return from_dict(cls, table, section)


def save_json(obj: Any, path: str | Path) -> None:
    """Write a config (or any JSON-ready value) atomically as pretty JSON."""
    from onerec.io import atomic_write_text

    atomic_write_text(Path(path), json.dumps(to_dict(obj), indent=2, sort_keys=True) + "\n")
