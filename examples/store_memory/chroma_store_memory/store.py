"""The ``memory`` store: every space held in memory, and kept on disk as one file.

A space (its rows, scores, batch keys and triggers) is one immutable :class:`_Space`. A write
builds the space's next state, writes it to the space's file (a temporary file, flushed to
disk, renamed over the old one) and only then puts it in place of the old state, all under
the store's one lock. So readers, who take a space's state as it is, always see whole
writes; an acknowledged write survives a crash; a write that fails changes nothing. Every
write rewrites its space's file: this store suits spaces of thousands of rows, not millions.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from chroma_core.filters import Filter
from chroma_core.schema import batch_fingerprint, embeddings_of
from chroma_core.store import (
    BATCH_KEY_RETENTION_SECONDS,
    BatchAlreadyStored,
    PagedBackup,
    Store,
    check_dimension,
    check_same_space,
)
from chroma_store_memory.where import matching
from chroma_wire.errors import Conflict, NotFound
from chroma_wire.rows import rows_schema
from chroma_wire.types import CATALOGUE_COLUMNS, CATALOGUE_FIELDS, SpaceInfo

if TYPE_CHECKING:
    from chroma_core.store import PriorityQuery, RowQuery, TriggerChange, VectorQuery

SUFFIX = ".space"
TRIGGER_COUNTER = "triggers.json"
SPACE_COUNTER = "spaces.json"
_STATE = b"chroma.space"
_ROW_COLUMNS = ["seq", *CATALOGUE_COLUMNS]
_PRIORITY_COLUMNS = ["id", "priority", "components", "computed_at"]
_PRIORITY_CATALOGUE = [c for c in CATALOGUE_COLUMNS if c not in ("id", "metadata")]
_ITEM_COLUMNS = ["id", "input_uri", "dataset", "label", "inference", "priority"]


def _schema(dim: int) -> pa.Schema:
    """A space's rows: ``seq``, then a batch's columns as the service hands them over."""
    return pa.schema([pa.field("seq", pa.int64(), nullable=False), *rows_schema(dim)])


@dataclass(frozen=True)
class _Space:
    name: str
    metric: str
    dim: int | None
    model: dict
    created_at: str
    max_seq: int = 0
    #: every stored row, in seq order
    rows: pa.Table = field(default_factory=lambda: _schema(0).empty_table())
    #: id: (priority, components, computed_at)
    priorities: Mapping[str, tuple[float, str | None, str | None]] = field(default_factory=dict)
    #: key: (fingerprint, first seq, row count, added at in Unix seconds)
    batch_keys: Mapping[str, tuple[str, int, int, float]] = field(default_factory=dict)
    #: id: (the trigger without its space, its items in the order given)
    triggers: Mapping[int, tuple[dict, list[dict]]] = field(default_factory=dict)
    #: never given to another space of the store
    space_id: int = 0

    def info(self, count: bool) -> SpaceInfo:
        rows = self.rows.num_rows if count else None
        return SpaceInfo(
            self.name, self.metric, self.dim, rows, dict(self.model), self.created_at,
            self.space_id,
        )  # fmt: skip


class MemoryStore(Store, PagedBackup):
    """A :class:`Store` in memory with a file per space under ``directory``; it pages a
    back-up out, and has no restore and no k-NN search of its own."""

    name = "memory"

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        # one writer at a time, and the state a reader takes is never half written
        self._lock = threading.RLock()
        self._spaces: dict[str, _Space] = {}
        self._trigger_spaces: dict[int, str] = {}
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            space = _read(path)
            self._spaces[space.name] = space
            self._trigger_spaces.update(dict.fromkeys(space.triggers, space.name))
        counter = self.directory / TRIGGER_COUNTER
        last = json.loads(counter.read_text())["last_id"] if counter.exists() else 0
        # a trigger id is never given twice, even after its space was deleted
        self._last_trigger_id = max([last, *self._trigger_spaces])
        counter = self.directory / SPACE_COUNTER
        last = json.loads(counter.read_text())["last_id"] if counter.exists() else 0
        self._last_space_id = max([last, *(s.space_id for s in self._spaces.values())])

    # --- state ----------------------------------------------------------------
    def _space(self, name: str) -> _Space:
        with self._lock:
            space = self._spaces.get(name)
        if space is None:
            raise NotFound(f"space {name!r} does not exist")
        return space

    def _commit(self, space: _Space) -> None:
        """Make ``space`` durable, then current (called under the lock)."""
        _write(self.directory / f"{space.name}{SUFFIX}", space)
        self._spaces[space.name] = space
        self._trigger_spaces.update(dict.fromkeys(space.triggers, space.name))

    def _trigger(self, trigger_id: int) -> tuple[_Space, dict, list[dict]]:
        with self._lock:
            name = self._trigger_spaces.get(trigger_id)
            space = self._spaces.get(name) if name is not None else None
        if space is None or trigger_id not in space.triggers:
            raise NotFound(f"trigger {trigger_id!r:.40} does not exist")
        trigger, items = space.triggers[trigger_id]
        return space, trigger, items

    # --- spaces ---------------------------------------------------------------
    def create_space(self, name: str, metric: str, model: dict) -> SpaceInfo:
        with self._lock:
            if name in self._spaces:
                raise Conflict(f"space {name!r} already exists")
            space_id = self._last_space_id + 1
            # the counter goes to disk first: a crash after it only leaves a number unused
            _write_json(self.directory / SPACE_COUNTER, {"last_id": space_id})
            self._last_space_id = space_id
            model = json.loads(json.dumps(model or {}))
            space = _Space(name, metric, None, model, _now(), space_id=space_id)
            self._commit(space)
        return space.info(count=True)

    def get_space(self, name: str, *, count: bool = True) -> SpaceInfo:
        return self._space(name).info(count)

    def list_spaces(self) -> list[SpaceInfo]:
        with self._lock:
            spaces = sorted(self._spaces.values(), key=lambda space: space.name)
        return [space.info(count=True) for space in spaces]

    def delete_space(self, name: str) -> None:
        with self._lock:
            space = self._space(name)
            (self.directory / f"{name}{SUFFIX}").unlink()
            _sync(self.directory)
            del self._spaces[name]
            for trigger_id in space.triggers:
                self._trigger_spaces.pop(trigger_id, None)

    # --- rows -----------------------------------------------------------------
    def add(self, space: str, rows: pa.Table, batch_key: str | None = None) -> np.ndarray:
        # hashed before the lock is taken: other writers need not wait for it
        fingerprint = batch_fingerprint(rows) if batch_key is not None else None
        with self._lock:
            old = self._space(space)
            keys = dict(old.batch_keys)
            if batch_key is not None:
                if batch_key in keys:
                    stored, first, count, _ = keys[batch_key]
                    if stored != fingerprint:
                        raise Conflict(
                            f"batch key {batch_key!r} already names another batch in space "
                            f"{space!r} (its {count} rows from seq {first}); a key names one "
                            "batch, send new rows under a new key"
                        )
                    seqs = np.arange(first, first + count, dtype=np.int64)
                    raise BatchAlreadyStored(space, batch_key, seqs)
            dim = check_dimension(space, old.dim, rows)
            n = rows.num_rows
            if n == 0:
                return np.empty(0, dtype=np.int64)
            stored_ids = set(old.rows.column("id").to_pylist())
            taken = next((i for i in rows.column("id").to_pylist() if i in stored_ids), None)
            if taken is not None:
                raise Conflict(f"id {taken!r:.200} is already stored in space {space!r}")
            seqs = np.arange(old.max_seq + 1, old.max_seq + n + 1, dtype=np.int64)
            added = pa.Table.from_arrays([pa.array(seqs), *rows.columns], schema=_schema(dim))
            table = pa.concat_tables([old.rows, added]) if old.rows.num_rows else added
            if batch_key is not None and fingerprint is not None:
                now = time.time()
                keys = {
                    key: entry
                    for key, entry in keys.items()
                    if entry[3] >= now - BATCH_KEY_RETENTION_SECONDS
                }
                keys[batch_key] = (fingerprint, int(seqs[0]), n, now)
            self._commit(replace(old, dim=dim, max_seq=int(seqs[-1]), rows=table, batch_keys=keys))
        return seqs

    def select(self, space: str, query: RowQuery) -> pa.Table:
        rows = _select(self._space(space).rows, ids=query.ids, where=query.where)
        rows = rows.slice(query.offset or 0, query.limit)
        wide = query.include_embeddings
        return rows.select([*_ROW_COLUMNS, "embedding", "output"] if wide else _ROW_COLUMNS)

    def count(self, space: str, where: Filter | None = None) -> int:
        return _select(self._space(space).rows, where=where).num_rows

    def delete(
        self, space: str, *, ids: list[str] | None = None, where: Filter | None = None
    ) -> np.ndarray:
        with self._lock:
            old = self._space(space)
            if ids is None and where is None:
                return np.empty(0, dtype=np.int64)
            mask = _mask(old.rows, ids=ids, where=where)
            gone = old.rows.filter(mask)
            if gone.num_rows == 0:
                return np.empty(0, dtype=np.int64)
            gone_ids = set(gone.column("id").to_pylist())
            self._commit(
                replace(
                    old,
                    rows=old.rows.filter(pc.invert(mask)),
                    priorities={i: p for i, p in old.priorities.items() if i not in gone_ids},
                )
            )
        return gone.column("seq").to_numpy().astype(np.int64)

    def select_vectors(
        self, space: str, query: VectorQuery
    ) -> tuple[np.ndarray, np.ndarray | None]:
        rows = _select(
            self._space(space).rows, where=query.where, seqs=query.seqs, after_seq=query.after_seq
        )
        found = rows.column("seq").to_numpy().astype(np.int64)
        if not query.with_vectors:
            return found, None
        # a copy the caller may write to
        return found, np.array(embeddings_of(rows), dtype=np.float32)

    def rows_by_seq(self, space: str, seqs: np.ndarray) -> pa.Table:
        return _select(self._space(space).rows, seqs=seqs).select(_ROW_COLUMNS)

    def max_seq(self, space: str) -> int:
        return self._space(space).max_seq

    # --- priorities -----------------------------------------------------------
    def replace_priorities(
        self, space: str, scores: pa.Table, *, space_id: int | None = None
    ) -> None:
        n = scores.num_rows
        columns = [_column(scores, name, n) for name in _PRIORITY_COLUMNS]
        with self._lock:
            old = self._space(space)
            check_same_space(space, old.space_id, space_id)
            stored = set(old.rows.column("id").to_pylist())
            # a repeated id keeps its last score
            priorities = {
                i: (float(p), components, computed_at)
                for i, p, components, computed_at in zip(*columns, strict=True)
                if i in stored
            }
            self._commit(replace(old, priorities=priorities))

    def select_priorities(self, space: str, query: PriorityQuery) -> pa.Table:
        state = self._space(space)
        rows = _select(state.rows, where=query.where).select(["id", *_PRIORITY_CATALOGUE])
        min_priority = query.min_priority
        scored = []
        for row in rows.to_pylist():
            score = state.priorities.get(row["id"])
            if score is not None and (min_priority is None or score[0] >= min_priority):
                scored.append((score, row))
        # highest first, ties by id: Python orders text as SQLite does, by code point
        scored.sort(key=lambda entry: (-entry[0][0], entry[1]["id"]))
        scored = scored[: query.n]
        return pa.table(
            {
                "id": pa.array([row["id"] for _, row in scored], pa.string()),
                "priority": pa.array([score[0] for score, _ in scored], pa.float64()),
                "components": pa.array([score[1] for score, _ in scored], pa.string()),
                "computed_at": pa.array([score[2] for score, _ in scored], pa.string()),
                **{
                    name: pa.array([row[name] for _, row in scored], pa.string())
                    for name in _PRIORITY_CATALOGUE
                },
            }
        )

    # --- triggers -------------------------------------------------------------
    def create_trigger(
        self,
        space: str,
        items: pa.Table,
        note: str | None,
        selection: dict,
        *,
        space_id: int | None = None,
    ) -> dict:
        listed = _items(items)
        now = _now()
        with self._lock:
            old = self._space(space)
            check_same_space(space, old.space_id, space_id)
            trigger_id = self._last_trigger_id + 1
            # the counter goes to disk first: a crash after it only leaves an id unused
            _write_json(self.directory / TRIGGER_COUNTER, {"last_id": trigger_id})
            self._last_trigger_id = trigger_id
            trigger = {
                "id": trigger_id,
                "status": "pending",
                "note": note,
                "selection": _plain(selection or {}),
                "count": len(listed),
                "created_at": now,
                "updated_at": now,
                "deliveries": {},
            }
            self._commit(replace(old, triggers={**old.triggers, trigger_id: (trigger, listed)}))
        return {**trigger, "space": space}

    def get_trigger(self, trigger_id: int) -> dict:
        space, trigger, _ = self._trigger(trigger_id)
        return {**trigger, "space": space.name}

    def list_triggers(self, space: str | None = None, status: str | None = None) -> list[dict]:
        with self._lock:
            spaces = [self._space(space)] if space is not None else list(self._spaces.values())
        found = [
            {**trigger, "space": s.name}
            for s in spaces
            for trigger, _ in s.triggers.values()
            if status is None or trigger["status"] == status
        ]
        return sorted(found, key=lambda trigger: -trigger["id"])

    def change_trigger(self, trigger_id: int, change: TriggerChange) -> dict:
        status, delivery = change.status, change.delivery
        with self._lock:
            space, trigger, items = self._trigger(trigger_id)
            if status is None and delivery is None:
                return {**trigger, "space": space.name}
            deliveries = dict(trigger["deliveries"])
            if delivery is not None:
                deliveries[str(delivery[0])] = _plain(delivery[1])
            trigger = {
                **trigger,
                "status": status or trigger["status"],
                "deliveries": deliveries,
                "updated_at": _now(),
            }
            self._commit(replace(space, triggers={**space.triggers, trigger_id: (trigger, items)}))
        return {**trigger, "space": space.name}

    def trigger_items(self, trigger_id: int) -> pa.Table:
        _, _, items = self._trigger(trigger_id)
        # highest priority first, a missing one last; ties in the order given (a stable sort)
        ranked = sorted(items, key=lambda i: (i["priority"] is None, -(i["priority"] or 0)))
        return pa.table(
            {
                name: pa.array(
                    [item[name] for item in ranked],
                    pa.float64() if name == "priority" else pa.string(),
                )
                for name in _ITEM_COLUMNS
            }
        )

    # --- back-up --------------------------------------------------------------
    def rows_page(self, space: str, *, after_seq: int, limit: int) -> pa.Table:
        rows = _select(self._space(space).rows, after_seq=after_seq)
        return rows.slice(0, limit).select([*_ROW_COLUMNS, "embedding", "output"])

    def priorities_page(self, space: str, *, after_id: str | None, limit: int) -> pa.Table:
        state = self._space(space)
        seq_of = dict(
            zip(
                state.rows.column("id").to_pylist(),
                state.rows.column("seq").to_pylist(),
                strict=True,
            )
        )
        page = sorted(i for i in state.priorities if after_id is None or i > after_id)[:limit]
        return pa.table(
            {
                "id": pa.array(page, pa.string()),
                "priority": pa.array([state.priorities[i][0] for i in page], pa.float64()),
                "components": pa.array([state.priorities[i][1] for i in page], pa.string()),
                "computed_at": pa.array([state.priorities[i][2] for i in page], pa.string()),
                "seq": pa.array([seq_of[i] for i in page], pa.int64()),
            }
        )


# --- selecting rows -------------------------------------------------------------------
def _mask(
    rows: pa.Table,
    *,
    ids: Sequence[str] | None = None,
    where: Filter | None = None,
    seqs: np.ndarray | None = None,
    after_seq: int | None = None,
) -> pa.ChunkedArray | pa.Array:
    mask: Any = pa.array(np.ones(rows.num_rows, dtype=bool))
    if ids is not None:
        mask = pc.and_(mask, pc.is_in(rows.column("id"), value_set=pa.array(ids, pa.string())))
    if seqs is not None:
        wanted = pa.array(np.asarray(seqs, dtype=np.int64).reshape(-1))
        mask = pc.and_(mask, pc.is_in(rows.column("seq"), value_set=wanted))
    if after_seq is not None:
        mask = pc.and_(mask, pc.greater(rows.column("seq"), int(after_seq)))
    if where is not None:
        catalogue = {name: rows.column(name).to_pylist() for name in CATALOGUE_FIELDS}
        found = matching(where, catalogue, rows.column("metadata").to_pylist())
        mask = pc.and_(mask, pa.array(found))
    return mask


def _select(rows: pa.Table, **conditions) -> pa.Table:
    """The rows meeting every condition :func:`_mask` takes, in seq order."""
    if all(value is None for value in conditions.values()):
        return rows
    return rows.filter(_mask(rows, **conditions))


def _column(table: pa.Table, name: str, n: int) -> list:
    return table.column(name).to_pylist() if name in table.column_names else [None] * n


def _items(items: pa.Table) -> list[dict]:
    n = items.num_rows
    columns = {name: _column(items, name, n) for name in _ITEM_COLUMNS}
    return [{name: columns[name][i] for name in _ITEM_COLUMNS} for i in range(n)]


# --- files ------------------------------------------------------------------------------
def _write(path: Path, space: _Space) -> None:
    """Replace the space's file with ``space``: its rows as an Arrow IPC file, the rest as
    JSON in the file's schema metadata."""
    state = {
        "name": space.name,
        "metric": space.metric,
        "dim": space.dim,
        "model": space.model,
        "created_at": space.created_at,
        "max_seq": space.max_seq,
        "space_id": space.space_id,
        "priorities": [[i, *score] for i, score in space.priorities.items()],
        "batch_keys": {key: list(entry) for key, entry in space.batch_keys.items()},
        "triggers": [[trigger, items] for trigger, items in space.triggers.values()],
    }
    table = space.rows.replace_schema_metadata({_STATE: json.dumps(state)})
    temporary = path.with_name(path.name + ".tmp")
    with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    _flush(temporary)
    os.replace(temporary, path)
    _sync(path.parent)


def _read(path: Path) -> _Space:
    with pa.OSFile(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
    state = json.loads(table.schema.metadata[_STATE])
    return _Space(
        name=state["name"],
        metric=state["metric"],
        dim=state["dim"],
        model=state["model"],
        created_at=state["created_at"],
        max_seq=state["max_seq"],
        rows=table.replace_schema_metadata(None),
        priorities={i: (p, components, at) for i, p, components, at in state["priorities"]},
        batch_keys={key: tuple(entry) for key, entry in state["batch_keys"].items()},
        triggers={trigger["id"]: (trigger, items) for trigger, items in state["triggers"]},
        space_id=state.get("space_id", 0),
    )


def _write_json(path: Path, value: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(value))
    _flush(temporary)
    os.replace(temporary, path)
    _sync(path.parent)


def _flush(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync(directory: Path) -> None:
    """Make a rename or removal in ``directory`` durable."""
    _flush(directory)


def _plain(value: Any) -> Any:
    """``value`` as JSON gives it back, so a trigger reads back as it was returned."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist()))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
