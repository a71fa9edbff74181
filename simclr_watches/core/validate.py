"""Checks for values read from untrusted files (JSON sidecars, checkpoint headers).

Each check returns the value when it has the expected type and range, and raises
:class:`FieldError` naming the field otherwise. Callers turn a FieldError into their
own one-line user error, prefixed with the file: ``idx/index.json: dim: expected ...``.
Config dataclasses raise it too, from their range checks (:mod:`simclr_watches.core.config`).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Sequence

from simclr_watches.core.errors import SimclrWatchesError

# Messages quote at most this many characters of a value: a hostile file cannot flood the terminal.
QUOTE_LIMIT = 40


class FieldError(SimclrWatchesError, ValueError):
    """A field that is missing, of the wrong type, or out of range.

    A user error (one line from the CLI) wherever it escapes; callers that know the
    file catch it to name the file too.

    Attributes:
        field: dotted path of the field, e.g. ``preprocessing.size`` or ``items[3].path``;
            "" for the document itself.
        problem: what is wrong, e.g. ``expected an integer in [8, 1024], got 100000``.
    """

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)


def join(prefix: str, field: str) -> str:
    """``prefix.field`` (``prefix[3]`` when field is an index, ``prefix`` when field is empty)."""
    if not prefix or not field:
        return prefix or field
    return prefix + field if field.startswith("[") else f"{prefix}.{field}"


@contextlib.contextmanager
def under(prefix: str) -> Iterator[None]:
    """Prefixes the field of any FieldError raised inside with ``prefix``."""
    try:
        yield
    except FieldError as e:
        raise FieldError(join(prefix, e.field), e.problem) from None


def describe(value: Any) -> str:
    """A short, one-line rendering of an untrusted value: strings quoted, containers by type and size."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if is_int(value) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)  # quotes strings and escapes newlines: the message stays one line
    return text if len(text) <= QUOTE_LIMIT else text[: QUOTE_LIMIT - 1] + "…"


def is_int(value: Any) -> bool:
    """An integer, not a bool (JSON true is not 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def int_in(value: Any, field: str, lo: int, hi: int) -> int:
    """An integer in ``[lo, hi]``."""
    if not (is_int(value) and lo <= value <= hi):
        raise FieldError(field, f"expected an integer in [{lo}, {hi}], got {describe(value)}")
    return value


def real_in(value: Any, field: str, lo: float, hi: float) -> float:
    """A finite number in ``[lo, hi]``, as a float."""
    number = is_int(value) or (isinstance(value, float) and math.isfinite(value))  # math.isfinite(10**400) overflows
    if not (number and lo <= value <= hi):
        raise FieldError(field, f"expected a number in [{lo:g}, {hi:g}], got {describe(value)}")
    return float(value)


def reals_in(values: Any, field: str, n: int, lo: float, hi: float) -> tuple[float, ...]:
    """Exactly ``n`` finite numbers in ``[lo, hi]`` (a list or tuple), as a tuple of floats."""
    if not isinstance(values, (list, tuple)) or len(values) != n:
        raise FieldError(field, f"expected a list of {n} numbers, got {describe(values)}")
    return tuple(real_in(v, f"{field}[{i}]", lo, hi) for i, v in enumerate(values))


def text(value: Any, field: str, max_len: int = 4096, *, empty: bool = False, printable: bool = False) -> str:
    """A string of at most ``max_len`` characters, without NUL; non-empty unless ``empty``.

    With ``printable``, also without line breaks or other control characters: for
    strings that messages quote (a model id), so that they stay one line.
    """
    ok = isinstance(value, str) and len(value) <= max_len and (value or empty)
    if not ok or "\0" in value or (printable and not value.isprintable()):
        kind = "a" if empty else "a non-empty"
        what = "printable string" if printable else "string"
        raise FieldError(field, f"expected {kind} {what} of at most {max_len} characters, got {describe(value)}")
    return value


def hex_digest(value: Any, field: str, n: int = 64) -> str:
    """A lowercase hex digest of ``n`` digits (a sha256 by default)."""
    if not (isinstance(value, str) and len(value) == n and all(c in "0123456789abcdef" for c in value)):
        raise FieldError(field, f"expected {n} lowercase hex digits, got {describe(value)}")
    return value


def one_of(value: Any, field: str, allowed: Sequence[Any]) -> Any:
    """One of ``allowed`` (compared by type and value: ``1`` is not ``true``)."""
    if not any(type(value) is type(a) and value == a for a in allowed):
        raise FieldError(field, f"expected {' or '.join(describe(a) for a in allowed)}, got {describe(value)}")
    return value


def obj(value: Any, field: str) -> dict[str, Any]:
    """A JSON object."""
    if not isinstance(value, dict):
        raise FieldError(field, f"expected an object, got {describe(value)}")
    return value


def array(value: Any, field: str, min_len: int = 0, max_len: int | None = None) -> list[Any]:
    """A JSON list of ``min_len`` to ``max_len`` elements."""
    if not isinstance(value, list) or len(value) < min_len or (max_len is not None and len(value) > max_len):
        bounds = f" of {min_len} to {max_len} elements" if max_len is not None else \
            f" of at least {min_len} elements" if min_len else ""
        raise FieldError(field, f"expected a list{bounds}, got {describe(value)}")
    return value


def member(d: dict[str, Any], key: str, field: str = "") -> Any:
    """``d[key]``; a FieldError naming ``field.key`` when it is missing."""
    if key not in d:
        raise FieldError(join(field, key), "missing")
    return d[key]


def depth(value: Any) -> int:
    """How deeply lists and objects nest in a parsed JSON value (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (list, dict)):
            deepest = max(deepest, d + 1)
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest
