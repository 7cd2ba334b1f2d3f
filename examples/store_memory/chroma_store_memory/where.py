"""``where`` filters evaluated in Python, row by row, with the built-in stores' semantics.

A row is its catalogue fields (text or None) and its metadata (a JSON object or None). A
metadata key that is missing or null is None; JSON true and false are the numbers 1 and 0,
and arrays and objects are their compact JSON text; ``$ne`` and ``$nin`` match rows lacking
the field; an order comparison (``$gt`` ...) matches only values of the filter value's kind
(text or number), so ``{"confidence": {"$gt": 0.5}}`` never matches ``"high"``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from chroma_core.filters import And, Cmp, Filter, Or

Row = tuple[dict[str, Any], Callable[[], dict | None]]
_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}


def matching(where: Filter, catalogue: dict[str, Sequence], metadata: Sequence) -> np.ndarray:
    """Which rows match ``where``: ``catalogue`` holds each catalogue field's values and
    ``metadata`` each row's metadata text, one per row."""
    test = _compile(where)
    n = len(metadata)
    out = np.zeros(n, dtype=bool)
    for i in range(n):
        fields = {name: values[i] for name, values in catalogue.items()}
        out[i] = test(fields, _parsed(metadata[i]))
    return out


def _parsed(text: str | None) -> Callable[[], dict | None]:
    """The row's metadata, parsed the first time a condition asks for it."""
    cache: list = []

    def get() -> dict | None:
        if not cache:
            cache.append(None if text is None else json.loads(text))
        return cache[0]

    return get


def _compile(node: Filter) -> Callable[[dict, Callable[[], dict | None]], bool]:
    if isinstance(node, And):
        parts = [_compile(item) for item in node.items]
        return lambda fields, meta: all(part(fields, meta) for part in parts)
    if isinstance(node, Or):
        parts = [_compile(item) for item in node.items]
        return lambda fields, meta: any(part(fields, meta) for part in parts)
    return _comparison(node)


def _comparison(cmp: Cmp) -> Callable[[dict, Callable[[], dict | None]], bool]:
    key = cmp.key
    if cmp.catalogue:

        def value(fields: dict, meta: Callable[[], dict | None]) -> Any:
            return fields[key]
    else:

        def value(fields: dict, meta: Callable[[], dict | None]) -> Any:
            return _metadata_value((meta() or {}).get(key))

    op = cmp.op
    if op in ("$in", "$nin"):
        listed = [_filter_value(v) for v in cmp.value]
        present = {v for v in listed if v is not None}
        has_null = None in listed

        def inside(fields: dict, meta: Callable[[], dict | None]) -> bool:
            v = value(fields, meta)
            return has_null if v is None else v in present

        if op == "$in":
            return inside
        return lambda fields, meta: not inside(fields, meta)
    wanted = _filter_value(cmp.value)
    if op == "$eq":
        return lambda fields, meta: value(fields, meta) == wanted
    if op == "$ne":
        return lambda fields, meta: value(fields, meta) != wanted
    compare = _ORDER[op]
    text = isinstance(wanted, str)

    def ordered(fields: dict, meta: Callable[[], dict | None]) -> bool:
        v = value(fields, meta)
        return v is not None and isinstance(v, str) == text and compare(v, wanted)

    return ordered


def _metadata_value(v: Any) -> Any:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, list | dict):
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False)
    return v


def _filter_value(v: Any) -> Any:
    return int(v) if isinstance(v, bool) else v
