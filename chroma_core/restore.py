"""The checks of what a restore sends: exported rows' seqs, scores, triggers and their items.

Rows themselves pass :func:`chroma_core.schema.validate_rows` like any batch; these checks
cover what only a restore carries, so a store is handed nothing it would not have written
itself.
"""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from chroma_wire.errors import InvalidInput
from chroma_wire.limits import MAX_ID_CHARS, MAX_METADATA_CHARS, MAX_NOTE_CHARS, MAX_TEXT_CHARS
from chroma_wire.types import TRIGGER_STATUSES

_ITEM_TEXT = ("id", "input_uri", "dataset", "label", "inference")


def check_time(name: str, value) -> str | None:
    """An ISO 8601 time as text, or None."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidInput(f"{name} must be an ISO 8601 time, got {value!r:.40}")
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{name} must be an ISO 8601 time, got {value!r:.40}") from None
    return value


#: the largest seq a back-up may carry. A store numbers rows from 1 and a back-up keeps
#: them: a seq this large would take any store's counting past 2^53 (beyond which a number
#: in JSON is no longer exact) long before its rows were written, and one near 2^63 would
#: leave no seq for the next add.
MAX_RESTORED_SEQ = 2**53 - 1


def check_seqs(column: pa.ChunkedArray) -> np.ndarray:
    """The seqs of restored rows: integers, positive, increasing from row to row, at most
    :data:`MAX_RESTORED_SEQ`."""
    if not pa.types.is_integer(column.type) or column.null_count:
        raise InvalidInput(f"seq must be integers without nulls, got Arrow type {column.type}")
    largest = pc.max(column).as_py() if len(column) else None
    if largest is not None and largest > MAX_RESTORED_SEQ:
        raise InvalidInput(
            f"seq {largest} is beyond {MAX_RESTORED_SEQ} (2^53 - 1), the largest a back-up may "
            "carry: this back-up was not written by an export"
        )
    seqs = column.to_numpy().astype(np.int64, copy=False)
    if len(seqs) and (seqs[0] < 1 or (np.diff(seqs) <= 0).any()):
        raise InvalidInput("seq must be positive and increase from row to row")
    return seqs


def check_scores(scores) -> pa.Table:
    """Scores as :meth:`chroma_core.store.Store.restore_priorities` takes them: a unique id,
    a finite priority, components as a JSON object (or null) and ``computed_at`` text."""
    if not isinstance(scores, pa.Table):
        raise InvalidInput("restore_priorities needs the scores as an Arrow table")
    missing = [c for c in ("id", "priority") if c not in scores.column_names]
    if missing:
        raise InvalidInput(f"the scores lack column(s): {', '.join(missing)}")
    limits = {"id": MAX_ID_CHARS, "components": MAX_METADATA_CHARS, "computed_at": 64}
    columns = {name: _text(scores, name, limit) for name, limit in limits.items()}
    ids, n = columns["id"], scores.num_rows
    if ids.null_count or (n and pc.min(pc.utf8_length(ids)).as_py() == 0):
        raise InvalidInput("every score needs an id")
    if pc.count_distinct(ids).as_py() != n:
        raise InvalidInput("an id has more than one score in the batch")
    priority = _numbers(scores, "priority")
    values = priority.to_numpy(zero_copy_only=False)
    if priority.null_count or not np.isfinite(values).all():
        raise InvalidInput("priority must be finite numbers in every row")
    # as metadata is checked: stored components are read back as JSON objects
    for text in columns["components"].drop_null().to_pylist():
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise InvalidInput(f"components must be JSON objects, got {text!r:.80}")
    return pa.table(
        {
            "id": ids,
            "priority": priority,
            "components": columns["components"],
            "computed_at": columns["computed_at"],
        }
    )


def check_trigger(trigger) -> dict:
    """A trigger as :meth:`chroma_core.store.Store.restore_trigger` takes it."""
    if not isinstance(trigger, dict):
        raise InvalidInput("trigger must be a dict")
    out: dict = {"id": _int("trigger id", trigger.get("id"), 1)}
    out["count"] = _int("trigger count", trigger.get("count"), 0)
    if trigger.get("status") not in TRIGGER_STATUSES:
        raise InvalidInput(
            f"unknown trigger status {trigger.get('status')!r:.40}; "
            f"use one of {', '.join(TRIGGER_STATUSES)}"
        )
    out["status"] = trigger["status"]
    for name in ("created_at", "updated_at"):
        out[name] = check_time(name, trigger.get(name))
    note = trigger.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE_CHARS):
        raise InvalidInput(f"note must be a string of at most {MAX_NOTE_CHARS:,} characters")
    out["note"] = note
    for name in ("selection", "deliveries"):
        value = trigger.get(name) or {}
        if not isinstance(value, dict):
            raise InvalidInput(f"trigger {name} must be a dict")
        out[name] = value
    return out


def check_items(items) -> pa.Table:
    """A trigger's items: text columns, an id in every row, a numeric priority (or null)."""
    if items is None:
        items = pa.table({"id": pa.array([], pa.string())})
    if not isinstance(items, pa.Table) or "id" not in items.column_names:
        raise InvalidInput("trigger items must be an Arrow table with an id column")
    columns = {
        name: _text(items, name, MAX_ID_CHARS if name == "id" else MAX_TEXT_CHARS)
        for name in _ITEM_TEXT
    }
    if columns["id"].null_count:
        raise InvalidInput("every trigger item needs an id")
    columns["priority"] = _numbers(items, "priority")
    return pa.table(columns)


def _text(table: pa.Table, name: str, limit: int) -> pa.Array:
    n = table.num_rows
    if name not in table.column_names:
        return pa.nulls(n, pa.string())
    column = table.column(name).combine_chunks()
    if not (
        pa.types.is_string(column.type)
        or pa.types.is_large_string(column.type)
        or pa.types.is_null(column.type)
    ):
        raise InvalidInput(f"{name} must be text, got Arrow type {column.type}")
    column = column.cast(pa.string())
    if column.null_count < n and pc.max(pc.utf8_length(column)).as_py() > limit:
        raise InvalidInput(f"{name} is longer than {limit} characters in some rows")
    return column


def _numbers(table: pa.Table, name: str) -> pa.Array:
    if name not in table.column_names:
        return pa.nulls(table.num_rows, pa.float64())
    column = table.column(name).combine_chunks()
    t = column.type
    if not (pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_null(t)):
        raise InvalidInput(f"{name} must be numbers, got Arrow type {t}")
    return column.cast(pa.float64())


def _int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidInput(f"{name} must be an integer, got {value!r:.40}")
    if value < minimum:
        raise InvalidInput(f"{name} must be at least {minimum}, got {value}")
    return int(value)
