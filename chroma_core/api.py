"""The operations clients call, by name: one table for the HTTP app and the embedded client.

Each operation takes the service, a dict of parameters and an optional Arrow table, and
returns a dict and an optional Arrow table, so every transport carries the same shapes.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from chroma_core import __version__
from chroma_core.errors import InvalidFilter, InvalidInput, NotFound
from chroma_core.protocol import PROTOCOL_VERSION
from chroma_core.service import Chroma

Reply = tuple[dict, pa.Table | None]
Operation = Callable[[Chroma, dict, pa.Table | None], Reply]
#: lists and dicts inside one parameter; deeper ones would exhaust Python's stack in the
#: code that reads them (json, repr), far below which a where filter stops at 16 levels
MAX_NESTING = 64


def _take(params: dict, *allowed: str) -> dict:
    unknown = set(params) - set(allowed)
    if unknown:
        raise InvalidInput(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    return params


def version(chroma, params, table) -> Reply:
    return {"version": __version__, "protocol": PROTOCOL_VERSION, "store": chroma.store.name}, None


def plugins(chroma, params, table) -> Reply:
    return {"plugins": chroma.plugins()}, None


def algorithms(chroma, params, table) -> Reply:
    return {"algorithms": chroma.algorithm_list()}, None


def space(chroma, params, table) -> Reply:
    p = _take(params, "name", "metric", "model")
    info = chroma.space(p.get("name"), p.get("metric", "l2"), p.get("model"))
    return {"space": info.to_json()}, None


def space_info(chroma, params, table) -> Reply:
    return {"space": chroma.space_info(_take(params, "space").get("space")).to_json()}, None


def status(chroma, params, table) -> Reply:
    return chroma.status(_take(params, "space").get("space")), None


def spaces(chroma, params, table) -> Reply:
    return {"spaces": [s.to_json() for s in chroma.spaces()]}, None


def delete_space(chroma, params, table) -> Reply:
    chroma.delete_space(_take(params, "space").get("space"))
    return {"deleted": True}, None


def add(chroma, params, table) -> Reply:
    p = _take(params, "space", "batch_key")
    if table is None:
        raise InvalidInput("add needs the rows as an Arrow table")
    ids = chroma.add(p.get("space"), table, p.get("batch_key"))
    return {"count": len(ids)}, pa.table({"id": pa.array(ids, pa.string())})


def get(chroma, params, table) -> Reply:
    p = _take(params, "space", "ids", "where", "limit", "offset", "include_embeddings")
    space_name = p.pop("space", None)
    return {}, chroma.get(space_name, **p)


def count(chroma, params, table) -> Reply:
    p = _take(params, "space", "where")
    return {"count": chroma.count(p.get("space"), p.get("where"))}, None


def delete(chroma, params, table) -> Reply:
    p = _take(params, "space", "ids", "where")
    return {"deleted": chroma.delete(p.get("space"), ids=p.get("ids"), where=p.get("where"))}, None


def nearest_neighbors(chroma, params, table) -> Reply:
    p = _take(params, "space", "ids", "k", "where")
    result = chroma.nearest_neighbors(
        p.get("space"), queries=table, ids=p.get("ids"), k=p.get("k", 10), where=p.get("where")
    )
    return {"meta": result.meta}, result.table


def run(chroma, params, table) -> Reply:
    p = _take(params, "space", "algorithm", "params")
    result = chroma.run(p.get("space"), p.get("algorithm"), p.get("params"))
    return {"meta": result.meta}, result.table


def priorities(chroma, params, table) -> Reply:
    p = _take(params, "space", "n", "where", "min_priority")
    space_name = p.pop("space", None)
    return {}, chroma.priorities(space_name, **p)


def trigger_retraining(chroma, params, table) -> Reply:
    p = _take(params, "space", "n", "min_priority", "where", "note", "strategy", "duplicate_radius")
    space_name = p.pop("space", None)
    return {"trigger": chroma.trigger_retraining(space_name, **p)}, None


def triggers(chroma, params, table) -> Reply:
    p = _take(params, "space", "status")
    return {"triggers": chroma.triggers(p.get("space"), p.get("status"))}, None


def set_trigger_status(chroma, params, table) -> Reply:
    p = _take(params, "trigger_id", "status")
    return {"trigger": chroma.set_trigger_status(p.get("trigger_id"), p.get("status"))}, None


def trigger_items(chroma, params, table) -> Reply:
    p = _take(params, "trigger_id")
    return {}, chroma.trigger_items(p.get("trigger_id"))


def export_rows(chroma, params, table) -> Reply:
    p = _take(params, "space", "after_seq", "limit")
    page, max_seq = chroma.export_rows(
        p.get("space"), after_seq=p.get("after_seq", 0), limit=p.get("limit")
    )
    return {"max_seq": max_seq}, page


def export_priorities(chroma, params, table) -> Reply:
    p = _take(params, "space", "after_id", "limit")
    return {}, chroma.export_priorities(
        p.get("space"), after_id=p.get("after_id"), limit=p.get("limit")
    )


def restore_space(chroma, params, table) -> Reply:
    p = _take(params, "space", "metric", "model", "created_at", "dim")
    info = chroma.restore_space(
        p.get("space"), p.get("metric", "l2"), p.get("model"), p.get("created_at"), p.get("dim")
    )
    return {"space": info.to_json()}, None


def restore_rows(chroma, params, table) -> Reply:
    p = _take(params, "space")
    return {"count": chroma.restore_rows(p.get("space"), table)}, None


def restore_priorities(chroma, params, table) -> Reply:
    p = _take(params, "space")
    return {"count": chroma.restore_priorities(p.get("space"), table)}, None


def restore_trigger(chroma, params, table) -> Reply:
    p = _take(params, "space", "trigger")
    return {"trigger": chroma.restore_trigger(p.get("space"), p.get("trigger"), table)}, None


OPERATIONS: dict[str, Operation] = {
    op.__name__: op
    for op in (
        version,
        plugins,
        algorithms,
        space,
        space_info,
        status,
        spaces,
        delete_space,
        add,
        get,
        count,
        delete,
        nearest_neighbors,
        run,
        priorities,
        trigger_retraining,
        triggers,
        set_trigger_status,
        trigger_items,
        export_rows,
        export_priorities,
        restore_space,
        restore_rows,
        restore_priorities,
        restore_trigger,
    )
}


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


def call(chroma: Chroma, op: str, params: dict, table: pa.Table | None = None) -> Reply:
    """Run operation ``op``; raises the typed errors of :mod:`chroma_core.errors`."""
    if op not in OPERATIONS:
        raise NotFound(f"unknown operation {op!r}")
    if not isinstance(params, dict):
        raise InvalidInput("parameters must be a dict")
    check_nesting(params)
    return OPERATIONS[op](chroma, dict(params), table)
