"""The input checks both ends run: names, text, and the integer, number, flag, choice and
filter parameters of operations and algorithms. Each raises :class:`InvalidInput` naming the
parameter and what it takes; plugins use them for their own parameters."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from chroma_wire.errors import InvalidFilter, InvalidInput
from chroma_wire.limits import MAX_INT, MAX_NESTING

SPACE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
# a client's name for one batch, kept with it so that the batch sent again is stored once
BATCH_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
# a NUL character escaped in JSON text (an even run of backslashes before it is not an escape)
_ESCAPED_NUL = r"(^|[^\\])(\\\\)*\\u0000"


def check_space_name(name) -> None:
    """Refuse a space name that is not 1-128 letters, digits, '_', '-' or '.'; clients check
    it too, since a name with a '/' would reach another route over HTTP."""
    if not isinstance(name, str) or not SPACE_NAME.fullmatch(name):
        raise InvalidInput(
            f"invalid space name {name!r:.80}: use 1-128 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )


def check_batch_key(key) -> str | None:
    """``key`` when it is a batch key a store can keep (None for none)."""
    if key is None:
        return None
    if not isinstance(key, str) or not BATCH_KEY.match(key):
        raise InvalidInput(
            f"batch_key must be 1 to 128 letters, digits, '_', '.', ':' or '-'; got {key!r:.60}"
        )
    return key


def class_name(value: Any) -> str:
    """The text a catalogue value is stored as (``3`` and ``3.0`` both become ``"3"``)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def check_text(name: str, column: pa.Array, json_text: bool = False) -> None:
    """Refuse text that is not UTF-8 (Arrow does not check it on reading a stream) or that
    holds a NUL character, which SQLite cuts strings at in its JSON functions, so that
    ``"a\\x00b"`` would be found by a look-up of ``"a"``. In JSON text (metadata) a NUL can
    only appear escaped."""
    try:
        column.validate(full=True)
    except pa.ArrowInvalid:
        raise InvalidInput(f"{name} is not valid UTF-8 text in some rows") from None
    if column.null_count == len(column):
        return
    if json_text:
        found = pc.match_substring_regex(column, _ESCAPED_NUL)
    else:
        found = pc.match_substring(column, "\x00")
    if pc.any(found).as_py():
        raise InvalidInput(f"{name} must not contain NUL characters")


def check_unicode(name: str, text: str) -> None:
    """Refuse a Python string that cannot be stored as UTF-8 (one with a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(
            f"{name} is not valid Unicode: it holds a lone surrogate such as '\\ud800'"
        ) from None


def flag(name: str, value) -> bool:
    """``value`` as a bool; it must be one (numpy's included), not a truthy stand-in."""
    if not isinstance(value, bool | np.bool_):
        raise InvalidInput(f"{name} must be true or false, got {value!r:.40}")
    return bool(value)


def optional_int(name: str, value, minimum: int, maximum: int = MAX_INT) -> int | None:
    """``value`` as an int from ``minimum`` to ``maximum``, or None when it is None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidInput(f"{name} must be an integer, got {value!r:.40}")
    if value > maximum:
        raise InvalidInput(f"{name} must be at most {maximum}")
    if value < minimum:
        shown = value if value >= -MAX_INT else "a larger negative number"
        raise InvalidInput(f"{name} must be at least {minimum}, got {shown}")
    return int(value)


def required_int(name: str, value, minimum: int, maximum: int = MAX_INT) -> int:
    """As :func:`optional_int`, with None refused."""
    if value is None:
        raise InvalidInput(f"{name} is required")
    return optional_int(name, value, minimum, maximum) or 0


def optional_float(
    name: str,
    value,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    above: float | None = None,
    below: float | None = None,
) -> float | None:
    """``value`` as a finite float, or None when it is None; ``minimum`` and ``maximum``
    bound it inclusively, ``above`` and ``below`` exclusively."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise InvalidInput(f"{name} must be a number, got {value!r:.40}")
    try:
        number = float(value)
    except OverflowError:
        number = float("inf")
    if not np.isfinite(number):
        raise InvalidInput(f"{name} must be finite")
    if (
        (minimum is not None and number < minimum)
        or (maximum is not None and number > maximum)
        or (above is not None and number <= above)
        or (below is not None and number >= below)
    ):
        bounds = [
            f"{word} {bound:g}"
            for word, bound in (
                ("at least", minimum),
                ("above", above),
                ("at most", maximum),
                ("below", below),
            )
            if bound is not None
        ]
        raise InvalidInput(f"{name} must be a number {' and '.join(bounds)}, got {number:g}")
    return number


def required_float(name: str, value, *bounds: float | None, **exclusive: float | None) -> float:
    """As :func:`optional_float` (the same bounds, ``minimum`` and ``maximum`` by position,
    ``above`` and ``below`` by name), with None refused."""
    if value is None:
        raise InvalidInput(f"{name} is required")
    found = optional_float(name, value, *bounds, **exclusive)
    assert found is not None
    return found


def choice(name: str, value, choices: tuple[str, ...]) -> str:
    """``value`` when it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise InvalidInput(f"{name} must be one of {', '.join(choices)}, got {value!r:.80}")
    return value


def optional_where(name: str, value) -> dict | None:
    """``value`` when it is a filter's dict of conditions, or None; what it says is checked
    where it is read (``chroma_core.filters.parse``)."""
    if value is not None and not isinstance(value, dict):
        raise InvalidFilter(f"{name} must be a dict of conditions, got {type(value).__name__}")
    return value


def int_text(name: str, text: str | None) -> int | None:
    """The integer a query-string parameter spells, or None when it is absent or empty."""
    if text is None or text == "":
        return None
    if not re.fullmatch(r"[+-]?[0-9]{1,30}", text.strip()):
        raise InvalidInput(f"{name} must be an integer, got {text!r:.40}")
    return int(text)


def check_all_used(owner: str, params: dict) -> None:
    """Refuse the parameters left in ``params`` once ``owner`` took those it knows."""
    if params:
        raise InvalidInput(f"unknown parameter(s) for {owner}: {', '.join(sorted(params))}")


def check_nesting(params: dict) -> None:
    """Refuse a parameter nested deeper than :data:`MAX_NESTING` lists and dicts, walking
    without recursion so that the check itself cannot run out of stack."""
    for name, value in params.items():
        level = [value]
        for _ in range(MAX_NESTING):
            level = [
                item
                for container in level
                if isinstance(container, dict | list | tuple)
                for item in (container.values() if isinstance(container, dict) else container)
                if isinstance(item, dict | list | tuple)
            ]
            if not level:
                break
        else:
            error = InvalidFilter if name == "where" else InvalidInput
            raise error(f"{name} is nested deeper than {MAX_NESTING} levels of lists and dicts")
