"""``where`` filters: validated once here, compiled to parameterised queries by each store.

A filter is a dict in the notation vector-store users know::

    {"dataset": "cifar10"}
    {"$and": [{"context": {"$ne": "training"}}, {"confidence": {"$lt": 0.5}}]}

:func:`parse` turns it into a small tree of :class:`And`, :class:`Or` and :class:`Cmp`
nodes whose keys and operators are known to be safe, so no store ever sees raw user text
in a place where SQL could go.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from chroma_wire.checks import class_name, optional_where
from chroma_wire.errors import InvalidFilter
from chroma_wire.limits import MAX_EXACT_INTEGER
from chroma_wire.types import CATALOGUE_FIELDS

OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin")
METADATA_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,127}$")
MAX_DEPTH = 16
MAX_NODES = 1000
MAX_IN_VALUES = 100_000
# the longest text a row can hold (its metadata); a longer value matches nothing
MAX_VALUE_CHARS = 65_536


@dataclass(frozen=True)
class Cmp:
    """``key op value``; ``catalogue`` tells a catalogue column from a metadata key."""

    key: str
    op: str
    value: Any
    catalogue: bool


@dataclass(frozen=True)
class And:
    items: tuple


@dataclass(frozen=True)
class Or:
    items: tuple


Filter = Cmp | And | Or


def parse(where: dict | None) -> Filter | None:
    """Validate ``where`` and return its tree, or None for no filter."""
    if optional_where("where", where) is None:
        return None
    if not where:
        return None
    counter = [0]
    return _node(where, 0, counter)


def _node(obj: Any, depth: int, counter: list[int]) -> Filter:
    if depth > MAX_DEPTH:
        raise InvalidFilter(f"where is nested deeper than {MAX_DEPTH} levels")
    counter[0] += 1
    if counter[0] > MAX_NODES:
        raise InvalidFilter(f"where has more than {MAX_NODES} conditions")
    if not isinstance(obj, dict) or not obj:
        raise InvalidFilter(f"each where condition must be a non-empty dict, got {obj!r:.80}")
    items: list[Filter] = []
    for key, value in obj.items():
        if not isinstance(key, str):
            raise InvalidFilter(f"where keys must be strings, got {key!r:.80}")
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise InvalidFilter(f"{key} takes a non-empty list of conditions")
            children = tuple(_node(v, depth + 1, counter) for v in value)
            items.append(And(children) if key == "$and" else Or(children))
        elif key.startswith("$"):
            raise InvalidFilter(
                f"unknown operator {key!r:.80} at the top of a condition; "
                "use $and or $or, or a field name"
            )
        else:
            items.append(_field(key, value))
    return items[0] if len(items) == 1 else And(tuple(items))


def _field(key: str, value: Any) -> Filter:
    catalogue = key in CATALOGUE_FIELDS
    if not catalogue and not METADATA_KEY.fullmatch(key):
        raise InvalidFilter(
            f"invalid field name {key!r:.80}: use a catalogue field "
            f"({', '.join(CATALOGUE_FIELDS)}) or a metadata key of letters, digits, _ and -"
        )
    if not isinstance(value, dict):
        return Cmp(key, "$eq", _operand(key, "$eq", value, catalogue), catalogue)
    if not value:
        raise InvalidFilter(f"empty condition for field {key!r}")
    conds = []
    for op, operand in value.items():
        if op not in OPERATORS:
            raise InvalidFilter(
                f"unknown operator {op!r:.80} for field {key!r}; known: {', '.join(OPERATORS)}"
            )
        if op in ("$in", "$nin"):
            if not isinstance(operand, list | tuple):
                raise InvalidFilter(f"{op} on {key!r} takes a list")
            if len(operand) > MAX_IN_VALUES:
                raise InvalidFilter(f"{op} on {key!r} has more than {MAX_IN_VALUES} values")
            operand = tuple(_operand(key, op, v, catalogue) for v in operand)
        else:
            operand = _operand(key, op, operand, catalogue)
        conds.append(Cmp(key, op, operand, catalogue))
    return conds[0] if len(conds) == 1 else And(tuple(conds))


def _operand(key: str, op: str, value: Any, catalogue: bool) -> Any:
    value = _scalar(key, op, value)
    if catalogue and value is not None:
        # catalogue fields are stored as text: class 3 is stored as "3"
        return class_name(value)
    return value


def _scalar(key: str, op: str, value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        if op in ("$gt", "$gte", "$lt", "$lte"):
            raise InvalidFilter(f"{op} on {key!r} needs a number or string, got {value!r}")
        return value
    if isinstance(value, str):
        return _text(key, value)
    if isinstance(value, float):
        if math.isnan(value):
            raise InvalidFilter(f"NaN is not a valid value for {key!r}")
        if math.isinf(value):
            raise InvalidFilter(f"infinite values are not valid for {key!r}")
        return value
    if isinstance(value, int):
        # every store compares metadata numbers as doubles, exact up to 2^53 only
        if abs(value) > MAX_EXACT_INTEGER:
            raise InvalidFilter(
                f"the integer {value} for {key!r} is beyond ±2^53 ({MAX_EXACT_INTEGER}), where "
                "numbers stop being exact: metadata numbers are compared as 64-bit floats; "
                "store and compare such a value as text"
            )
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _scalar(key, op, value.item())
    raise InvalidFilter(
        f"value for {key!r} {op} must be a string, number, bool or null, got {type(value).__name__}"
    )


def _text(key: str, value: str) -> str:
    if len(value) > MAX_VALUE_CHARS:
        raise InvalidFilter(
            f"value for {key!r} is longer than {MAX_VALUE_CHARS} characters, "
            "longer than any stored text"
        )
    if "\x00" in value:
        # SQLite's JSON functions end text at a NUL, so "a\x00b" would find "a"
        raise InvalidFilter(f"value for {key!r} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidFilter(
            f"value for {key!r} is not valid Unicode: it holds a lone surrogate"
        ) from None
    return value


def comparisons(node: Filter):
    """Every comparison of a filter tree, depth first."""
    if isinstance(node, Cmp):
        yield node
    else:
        for item in node.items:
            yield from comparisons(item)


def metadata_keys(node: Filter | None) -> list[str]:
    """The metadata keys a filter names, each once, in the order they appear."""
    found: list[str] = []

    def walk(item) -> None:
        if isinstance(item, And | Or):
            for child in item.items:
                walk(child)
        elif isinstance(item, Cmp) and not item.catalogue and item.key not in found:
            found.append(item.key)

    if node is not None:
        walk(node)
    return found


def render(node: Filter, leaf) -> str:
    """SQL text of a filter tree: ``leaf(cmp)`` renders each comparison (binding its values
    as parameters); ``$and``/``$or`` become parenthesised AND/OR, a long list of terms as a
    balanced tree of pairs, whose depth grows with the log of their number (a flat chain of
    a thousand ORs is an expression a thousand deep, past what a SQL parser takes)."""
    if isinstance(node, And | Or):
        joiner = " AND " if isinstance(node, And) else " OR "
        return _balanced([render(item, leaf) for item in node.items], joiner)
    if isinstance(node, Cmp):
        return leaf(node)
    raise InvalidFilter(f"not a filter node: {node!r:.80}")


def _balanced(parts: list[str], joiner: str) -> str:
    if len(parts) <= 2:
        return "(" + joiner.join(parts) + ")"
    middle = len(parts) // 2
    left, right = _balanced(parts[:middle], joiner), _balanced(parts[middle:], joiner)
    return "(" + left + joiner + right + ")"
