"""The one seam both transports call: an operation by name, dispatched to the service.

What each operation takes and answers is declared in :mod:`chroma_wire.operations`; this
module checks a call against its entry, calls the service method of the same name with the
parameters (and the request's Arrow table) and shapes the answer as a dict and an optional
Arrow table, so every transport carries the same shapes.
"""

from __future__ import annotations

import errno
from dataclasses import asdict, is_dataclass

import pyarrow as pa

from chroma_core.service import Chroma
from chroma_wire.checks import check_nesting
from chroma_wire.errors import (
    ChromaError,
    InvalidInput,
    NotFound,
    StorageDamaged,
    StorageFull,
)
from chroma_wire.operations import BY_NAME, Operation
from chroma_wire.types import Result

Reply = tuple[dict, pa.Table | None]


def call(chroma: Chroma, op: str, params: dict, table: pa.Table | None = None) -> Reply:
    """Run operation ``op``; raises the typed errors of :mod:`chroma_wire.errors`."""
    spec = BY_NAME.get(op) if isinstance(op, str) else None
    if spec is None:
        raise NotFound(f"unknown operation {op!r}")
    if not isinstance(params, dict):
        raise InvalidInput("parameters must be a dict")
    check_nesting(params)
    unknown = set(params) - set(spec.params)
    if unknown:
        raise InvalidInput(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    kwargs = {name: params.get(name) for name in spec.required} | params
    if spec.table is not None and table is not None:
        kwargs[spec.table] = table
    try:
        answer = getattr(chroma, spec.name)(**kwargs)
    except ChromaError:
        raise
    except Exception as exc:
        if _damaged(exc):
            raise StorageDamaged(
                f"{op} failed: the store's files are damaged ({exc}); see the server log and "
                "docs/reliability.md"
            ) from exc
        if _disk_full(exc):
            raise StorageFull(
                f"{op} stored nothing: the store's disk is full ({exc}); free space, then send "
                "it again"
            ) from exc
        raise
    return _reply(spec, answer)


def _damaged(exc: BaseException) -> bool:
    """Whether ``exc`` says a store's file is damaged (SQLite's SQLITE_CORRUPT and
    SQLITE_NOTADB, met outside the store's own checks)."""
    text = str(exc)
    return "database disk image is malformed" in text or "file is not a database" in text


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the database's size limit) is full: SQLite's
    SQLITE_FULL, an OS error ENOSPC or EDQUOT, ClickHouse's NOT_ENOUGH_SPACE."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return True
    text = str(exc)
    return "database or disk is full" in text or "NOT_ENOUGH_SPACE" in text


def _reply(spec: Operation, answer) -> Reply:
    if spec.reply == "ids":
        return {"count": len(answer)}, pa.table({"id": pa.array(answer, pa.string())})
    if spec.reply:
        return {spec.reply: _json(answer)}, None
    if isinstance(answer, Result):
        return {"meta": answer.meta}, answer.table
    if isinstance(answer, pa.Table):
        return {}, answer
    if isinstance(answer, tuple):
        return answer
    return answer, None


def _json(value):
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, list):
        return [_json(v) for v in value]
    return value
