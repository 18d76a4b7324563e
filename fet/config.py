"""Typed configs: dataclasses loaded from YAML, with ``key=value`` overrides from the command line.

Every config in the project is a (possibly nested) dataclass. ``load_config(Cls, "f.yaml", ["a.b=3"])``
reads the YAML, applies the dotted overrides, and builds ``Cls`` with every field type-checked, so a
typo in a key or a wrong type fails at load time with the key's full path in the message.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not match its dataclass."""


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=1e-4"`` → (["optim", "lr"], 0.0001). The value is parsed as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, a dotted key into the config, e.g. steps=100")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each dotted ``key=value`` in a nested dict (a new copy; the input is not changed)."""
    data = _deep_copy(data)
    for text in overrides:
        path, value = parse_override(text)
        node: Any = data
        for part in path[:-1]:
            if isinstance(node, list):  # sources.0.root=...: a list item by index
                node = _list_item(node, part, text)
                continue
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict | list):
                raise ConfigError(f"override {text!r}: {part!r} is a value, not a section")
            node = child
        if isinstance(node, list):
            node[_list_index(node, path[-1], text)] = value
        else:
            node[path[-1]] = value
    return data


def _list_index(items: list, part: str, text: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise ConfigError(f"override {text!r}: {part!r} is not an index of a list of {len(items)} items")
    return int(part)


def _list_item(items: list, part: str, text: str) -> Any:
    item = items[_list_index(items, part, text)]
    if not isinstance(item, dict | list):
        raise ConfigError(f"override {text!r}: item {part} is a value, not a section")
    return item


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a dict, checking keys and types. ``where`` prefixes error paths."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {unknown}; expected some of {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}" if where else name)
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{where or cls.__name__}: {e}") from e
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError:
            raise
        except ValueError as e:  # a class's own error type (e.g. SourceError): a config error all the same
            raise ConfigError(str(e)) from e
    return obj


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {args}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(kt, k, where): _coerce(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def to_dict(obj: Any) -> Any:
    """A dataclass (tree) as plain dicts/lists, ready for YAML or JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts → one level with dotted keys: ``{"optim": {"lr": 1e-4}}`` → ``{"optim.lr": 1e-4}``
    (values kept as they are; an empty dict stays a value)."""
    if isinstance(value, dict) and value:
        return {k: v for key, sub in value.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from a local path or ``s3://`` URI."""
    from fet.storage import read_text

    try:
        data = yaml.safe_load(read_text(str(path)))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file (expected YAML in UTF-8): {e.reason} at byte {e.start}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Load ``cls`` from a YAML file (or its defaults when ``path`` is None) plus ``key=value`` overrides.
    An error is prefixed with what caused it: the first override that makes a valid config invalid, else
    the file."""
    base = read_yaml(path) if path is not None else {}
    overrides = list(overrides or [])
    data = apply_overrides(base, overrides)  # a malformed override is named by its own error
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        culprit, error = _first_bad_override(cls, base, overrides)
        if culprit is not None:
            raise ConfigError(f"override {culprit!r}: {error}") from error
        raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from e


def _first_bad_override(cls: type, base: dict[str, Any], overrides: list[str]) -> tuple[str | None, Exception | None]:
    """The first override after which ``base`` (valid on its own) no longer builds ``cls``, with the error it
    gives; (None, None) when ``base`` itself fails: the file is at fault, or lacks a key an override supplies."""
    for n in range(len(overrides) + 1):
        try:
            from_dict(cls, apply_overrides(base, overrides[:n]))
        except ConfigError as e:
            return (overrides[n - 1], e) if n else (None, None)
    return None, None
