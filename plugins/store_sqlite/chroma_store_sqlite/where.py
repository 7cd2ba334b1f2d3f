"""Compile a parsed ``where`` tree to a parameterised SQLite condition on the rows table.

Field names reach the SQL only through :data:`COLUMNS` (a fixed table of column names);
metadata keys and every value travel as bound parameters.
"""

from __future__ import annotations

import json
import math
from typing import Any

from chroma_core.filters import METADATA_KEY, Cmp, Filter, render
from chroma_wire.checks import class_name
from chroma_wire.errors import InvalidFilter
from chroma_wire.types import CATALOGUE_FIELDS

COLUMNS = {name: name for name in CATALOGUE_FIELDS}
_ORDER = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_INT64 = (-(1 << 63), (1 << 63) - 1)


def compile_where(where: Filter, alias: str = "r") -> tuple[str, dict[str, Any]]:
    """``(sql, params)``: a condition on table ``alias`` with named parameters ``:w0, :w1...``."""
    params: dict[str, Any] = {}
    return render(where, lambda cmp: _cmp(cmp, alias, params)), params


def _bind(params: dict[str, Any], value: Any) -> str:
    name = f"w{len(params)}"
    params[name] = value
    return ":" + name


def _cmp(cmp: Cmp, alias: str, params: dict[str, Any]) -> str:
    if cmp.catalogue:
        if cmp.key not in COLUMNS:
            raise InvalidFilter(f"{cmp.key!r:.80} is not a catalogue field")
        field = f"{alias}.{COLUMNS[cmp.key]}"
    else:
        if not METADATA_KEY.fullmatch(cmp.key):
            raise InvalidFilter(f"invalid metadata key {cmp.key!r:.80}")
        path = _bind(params, "$." + json.dumps(cmp.key))
        field = f"json_extract({alias}.metadata, {path})"

    op, value = cmp.op, cmp.value
    if op in ("$in", "$nin"):
        return _membership(field, op, value, cmp, params)
    value = _value(value, cmp.catalogue)
    if op == "$eq":
        return f"{field} IS NULL" if value is None else f"{field} = {_bind(params, value)}"
    if op == "$ne":
        # IS NOT is true when the field is NULL, so rows lacking the key match, as in MongoDB
        return f"{field} IS NOT {_bind(params, value)}"
    if op in _ORDER:
        condition = f"{field} {_ORDER[op]} {_bind(params, value)}"
        if cmp.catalogue:
            return condition
        # SQLite orders every number below every text, so without this guard
        # {"confidence": {"$gt": 0.5}} would match a confidence of "high"
        kinds = "'text'" if isinstance(value, str) else "'integer', 'real'"
        return f"(typeof({field}) IN ({kinds}) AND {condition})"
    raise InvalidFilter(f"unknown operator {op!r:.80}")


def _membership(field: str, op: str, values: Any, cmp: Cmp, params: dict[str, Any]) -> str:
    converted = [_value(v, cmp.catalogue) for v in values]
    has_null = any(v is None for v in converted)
    present = [v for v in converted if v is not None]
    if present:
        try:
            array = json.dumps(present, allow_nan=False)
        except ValueError:
            raise InvalidFilter(f"{op} on {cmp.key!r} cannot hold infinite values") from None
        listed = f"(SELECT value FROM json_each({_bind(params, array)}))"
    if op == "$in":
        parts = [f"{field} IN {listed}"] if present else []
        parts += [f"{field} IS NULL"] if has_null else []
        return "(" + " OR ".join(parts) + ")" if parts else "0"
    if not present:
        return f"{field} IS NOT NULL" if has_null else "1"
    # NOT IN is NULL for a NULL field: spell out that missing values are "not in" the list
    if has_null:
        return f"({field} IS NOT NULL AND {field} NOT IN {listed})"
    return f"({field} IS NULL OR {field} NOT IN {listed})"


def _value(value: Any, catalogue: bool) -> Any:
    if value is None:
        return None
    if catalogue:
        return value if isinstance(value, str) else class_name(value)
    if isinstance(value, bool):
        # json_extract reads JSON true/false as 1/0
        return int(value)
    if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
        return float(value)
    if isinstance(value, float) and math.isnan(value):
        raise InvalidFilter("NaN is not a valid filter value")
    return value
