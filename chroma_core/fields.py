"""A ``where`` on a field no input has: a typo such as ``contxt``, or ``priority`` given to
``priorities``, would match nothing without a word. When a filtered read finds nothing, each
metadata key the filter names is looked up (one row is enough), and a key no row of the
space has is an ``InvalidFilter`` that names the fields there are."""

from __future__ import annotations

import difflib
import json

from chroma_core import filters
from chroma_core.store import Store
from chroma_wire.errors import InvalidFilter
from chroma_wire.types import CATALOGUE_FIELDS

# rows read for the metadata keys an error names
_SAMPLE_ROWS = 200
# what a key meant elsewhere is written as, where the operation has its own parameter
_INSTEAD = {"priority": "min_priority", "id": "ids"}


def check_fields(store: Store, space: str, where: filters.Filter | None, operation: str) -> None:
    """``InvalidFilter`` when ``where`` names a metadata key no row of ``space`` holds; call
    it when a read with ``where`` found nothing (a key that exists costs one short read)."""
    keys = filters.metadata_keys(where)
    if not keys or store.get(space, limit=1).num_rows == 0:
        return  # an empty space has no fields to tell a typo from
    for key in keys:
        present = filters.parse({key: {"$ne": None}})
        if store.get(space, where=present, limit=1).num_rows:
            continue
        seen = _metadata_seen(store, space)
        known = [*CATALOGUE_FIELDS, *seen]
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        if key in _INSTEAD and operation == "priorities":
            hint = f"; {operation} takes {_INSTEAD[key]} for that"
        metadata = ", ".join(seen) if seen else "none"
        raise InvalidFilter(
            f"where names {key!r:.80}, a field no input of space {space!r} has{hint} (the "
            f"catalogue fields: {', '.join(CATALOGUE_FIELDS)}; metadata fields: {metadata})"
        )


def _metadata_seen(store: Store, space: str) -> list[str]:
    """The metadata keys of the space's first rows, sorted."""
    rows = store.get(space, limit=_SAMPLE_ROWS)
    keys: set[str] = set()
    for text in rows.column("metadata").drop_null().to_pylist():
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict):
            keys.update(value)
    return sorted(keys)[:50]
