"""Frozen dataclass configs loaded from TOML, with dotted command-line overrides.

Unknown keys, wrong types and out-of-range values are errors, never silently
ignored: a typo in a config must not train for an hour with a default the user
did not mean, nor crash an hour in. A config dataclass checks its values' ranges in
``__post_init__`` with :func:`check_range` and :func:`check_pair`, and the
:class:`simclr_watches.core.validate.FieldError` they raise becomes a ConfigError
naming the full key.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from simclr_watches.core.errors import ConfigError, FileReadError
from simclr_watches.core.files import MAX_TEXT_BYTES, read_text_limited
from simclr_watches.core.validate import FieldError

T = TypeVar("T")


def _bounds(low: float | None, high: float | None, low_open: bool) -> str:
    """A range in words: ``in (0, 1]``, ``>= 1``, ``<= 5``, ``finite``."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}]" if isinstance(low, float) else f"in [{low}, {high}]"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"<= {high:g}" if high is not None else "finite"


def check_range(cfg: Any, key: str, low: float | None = None, high: float | None = None, *,
                low_open: bool = False) -> None:
    """Checks that ``cfg.<key>`` (a number, or every number of a tuple) is finite and within the bounds.

    Args:
        low, high: inclusive bounds (None: unbounded on that side).
        low_open: ``low`` itself is excluded, e.g. a learning rate > 0.

    Raises:
        FieldError: naming ``key``, the range and the value (NaN and infinity are never in range).
    """
    value = getattr(cfg, key)
    for v in value if isinstance(value, tuple) else (value,):
        finite = isinstance(v, int) or math.isfinite(v)  # an int is exact (math.isfinite overflows on a huge one)
        inside = finite and (low is None or (v > low if low_open else v >= low)) and (high is None or v <= high)
        if not inside:
            each, got = (" each", list(value)) if isinstance(value, tuple) else ("", value)
            raise FieldError(key, f"must be {_bounds(low, high, low_open)}{each}, got {got!r}")


def check_pair(cfg: Any, key: str, low: float | None = None, high: float | None = None, *,
               low_open: bool = False) -> None:
    """Checks a ``(lowest, highest)`` range field: both ends as in :func:`check_range`, in order.

    Raises:
        FieldError: an end out of bounds, or the first above the second.
    """
    check_range(cfg, key, low, high, low_open=low_open)
    first, second = getattr(cfg, key)
    if first > second:
        raise FieldError(key, f"must be [lowest, highest], got {[first, second]!r}")


def _check_value(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return from_dict(tp, value, where)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: expected one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {args}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check_value(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_check_value(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is float:
        # TOML writes 1 for 1.0; an int is a fine float, a bool is not.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp in (bool, str):
        if type(value) is tp:
            return value
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    raise ConfigError(f"{where}: unsupported config type {tp!r}")  # a bug in the dataclass, not user input


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Builds dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"known: {', '.join(sorted(fields))}"
        )
    kwargs = {
        k: _check_value(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()
    }
    try:
        return cls(**kwargs)
    except FieldError as e:  # a range check of the dataclass: the message names the full key
        raise ConfigError(f"{where}.{e.field}: {e.problem}" if where else str(e)) from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from e


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain dict of a config, with tuples as lists so it writes as TOML or JSON."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parses ``a.b.c=value``; the value is read as TOML, else taken as a bare string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.epochs=50")
    try:
        value = _parse_toml(f"v = {raw.strip()}", f"override {key.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return [p.strip() for p in key.split(".")], value


def _parse_toml(text: str, what: str) -> dict[str, Any]:
    """``tomllib.loads``, with nesting too deep for the parser as a ConfigError.

    Raises:
        tomllib.TOMLDecodeError: not TOML.
        ConfigError: nested too deeply.
    """
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise ConfigError(f"{what}: nested too deeply") from None


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Returns a copy of ``data`` with each dotted override set (validated later, by type)."""
    out = _deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {k} is not a table")
        node[keys[-1]] = value
    return out


def _deepcopy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deepcopy(v) if isinstance(v, dict) else v for k, v in d.items()}


def load_config(cls: type[T], path: Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Loads ``cls`` from a TOML file (or its defaults when ``path`` is None), then overrides.

    Raises:
        ConfigError: the file is missing, not a regular file, larger than MAX_TEXT_BYTES or
            not TOML, or a key, type or value is wrong.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists() and not path.is_symlink():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = _parse_toml(read_text_limited(path, MAX_TEXT_BYTES), str(path))
        except FileReadError as e:
            raise ConfigError(str(e)) from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
    data = apply_overrides(data, overrides)
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None
