"""Compile a parsed ``where`` tree to a parameterised ClickHouse condition on a rows table.

The semantics are the SQLite store's (the conformance suite holds both to them): a missing
metadata key is null, ``$ne``/``$nin`` match rows lacking the field, comparisons never
cross types, and booleans compare as the numbers 0 and 1. Column names come from a fixed
table; metadata keys and values are bound as ``{wN:Type}`` parameters.
"""

from __future__ import annotations

import math
from typing import Any

from chroma_core.filters import METADATA_KEY, Cmp, Filter, render
from chroma_wire.checks import class_name
from chroma_wire.errors import InvalidFilter
from chroma_wire.types import CATALOGUE_FIELDS

COLUMNS = {name: name for name in CATALOGUE_FIELDS}
_ORDER = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_NUMERIC = "('Int64', 'UInt64', 'Double', 'Bool')"


def compile_where(where: Filter, alias: str = "r") -> tuple[str, dict[str, Any]]:
    """``(sql, params)`` for a condition on table ``alias``; the SQL is never NULL."""
    params: dict[str, Any] = {}

    def leaf(cmp: Cmp) -> str:
        return (_catalogue if cmp.catalogue else _metadata)(cmp, alias, params)

    return render(where, leaf), params


def _bind(params: dict[str, Any], value: Any, kind: str) -> str:
    name = f"w{len(params)}"
    params[name] = value
    return f"{{{name}:{kind}}}"


def listed(parameter: str) -> str:
    """The right side of ``x IN ...`` for an array ``parameter`` (``{name:Array(T)}``): a
    subquery over the array. IN builds one hash set of it (and serves index analysis) where
    has() scans the list every row; and a literal array on the right of IN takes ClickHouse
    minutes to analyse beyond about 64,000 elements, where the subquery takes a second per
    million."""
    return f"(SELECT arrayJoin({parameter}))"


def _set(params: dict[str, Any], values: list, kind: str) -> str:
    return listed(_bind(params, values, kind))


def _catalogue(cmp: Cmp, alias: str, params: dict[str, Any]) -> str:
    if cmp.key not in COLUMNS:
        raise InvalidFilter(f"{cmp.key!r:.80} is not a catalogue field")
    field = f"{alias}.{COLUMNS[cmp.key]}"
    op = cmp.op
    if op in ("$in", "$nin"):
        values = [None if v is None else _text(v) for v in cmp.value]
        present = [v for v in values if v is not None]
        has_null = len(present) < len(values)
        listed = f"assumeNotNull({field}) IN {_set(params, present, 'Array(String)')}"
        inside = " OR ".join(
            ([f"(isNotNull({field}) AND {listed})"] if present else [])
            + ([f"isNull({field})"] if has_null else [])
        )
        inside = f"({inside})" if inside else "0"
        return inside if op == "$in" else f"NOT {inside}"
    if cmp.value is None:
        if op == "$eq":
            return f"isNull({field})"
        if op == "$ne":
            return f"isNotNull({field})"
        raise InvalidFilter(f"{op} on {cmp.key!r} needs a value")
    value = _bind(params, _text(cmp.value), "String")
    if op == "$eq":
        return f"ifNull({field} = {value}, 0)"
    if op == "$ne":
        return f"ifNull({field} != {value}, 1)"
    if op in _ORDER:
        return f"ifNull({field} {_ORDER[op]} {value}, 0)"
    raise InvalidFilter(f"unknown operator {op!r:.80}")


def _metadata(cmp: Cmp, alias: str, params: dict[str, Any]) -> str:
    if not METADATA_KEY.fullmatch(cmp.key):
        raise InvalidFilter(f"invalid metadata key {cmp.key!r:.80}")
    doc = f"ifNull({alias}.metadata, '{{}}')"
    key = _bind(params, cmp.key, "String")
    kind = f"JSONType({doc}, {key})"
    as_bool = f"toFloat64(JSONExtractBool({doc}, {key}))"
    number = f"if({kind} = 'Bool', {as_bool}, JSONExtractFloat({doc}, {key}))"
    text = f"JSONExtractString({doc}, {key})"
    op = cmp.op

    def equals(value: Any) -> str:
        if value is None:
            return f"{kind} = 'Null'"
        if isinstance(value, str):
            return f"({kind} = 'String' AND {text} = {_bind(params, value, 'String')})"
        return f"({kind} IN {_NUMERIC} AND {number} = {_bind(params, _number(value), 'Float64')})"

    if op in ("$in", "$nin"):
        values = list(cmp.value)
        strings = [v for v in values if isinstance(v, str)]
        numbers = [_number(v) for v in values if v is not None and not isinstance(v, str)]
        parts = []
        if strings:
            listed = _set(params, strings, "Array(String)")
            parts.append(f"({kind} = 'String' AND {text} IN {listed})")
        if numbers:
            listed = _set(params, numbers, "Array(Float64)")
            parts.append(f"({kind} IN {_NUMERIC} AND {number} IN {listed})")
        if any(v is None for v in values):
            parts.append(f"{kind} = 'Null'")
        inside = "(" + " OR ".join(parts) + ")" if parts else "0"
        return inside if op == "$in" else f"NOT {inside}"
    if op == "$eq":
        return equals(cmp.value)
    if op == "$ne":
        return f"NOT {equals(cmp.value)}"
    if op in _ORDER:
        if isinstance(cmp.value, str):
            bound = _bind(params, cmp.value, "String")
            return f"({kind} = 'String' AND {text} {_ORDER[op]} {bound})"
        bound = _bind(params, _number(cmp.value), "Float64")
        return f"({kind} IN {_NUMERIC} AND {number} {_ORDER[op]} {bound})"
    raise InvalidFilter(f"unknown operator {op!r:.80}")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else class_name(value)


def _number(value: Any) -> float:
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        raise InvalidFilter("NaN and infinite values cannot be filter values")
    return number
