"""The private wire format between client and server, and its version.

A request or response is a dict of parameters and, for bulk data, one Arrow table. With a
table the body is an Arrow IPC stream whose schema metadata carries the dict as JSON under
``chroma.params``; without one the body is JSON. Both ends refuse another protocol version.

A client on the server's machine may instead write a request's Arrow stream to a file in
the directory ``GET /api/v1/shm`` advertises and send an empty body naming the file in
``X-Chroma-Shm`` (the server's side is ``chroma_core.shared_memory``); with
``X-Chroma-Shm-Reply: accept`` a large Arrow reply comes back the same way, named in the
``X-Chroma-Shm-Reply`` reply header. Every reply says in ``X-Chroma-Transport`` whether the
request came through ``shm`` or the ``socket``.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc

from chroma_wire.errors import MalformedPayload
from chroma_wire.operations import OPERATIONS

# 2: an add carries the batch_key parameter, which a server of version 1 refuses
PROTOCOL_VERSION = "2"
PROTOCOL_HEADER = "X-Chroma-Protocol"
ARROW_TYPE = "application/vnd.apache.arrow.stream"
JSON_TYPE = "application/json"
PARAMS_KEY = b"chroma.params"
SHM_ROUTE = "/api/v1/shm"
SHM_HEADER = "X-Chroma-Shm"
SHM_REPLY_HEADER = "X-Chroma-Shm-Reply"
SHM_REPLY_ACCEPT = "accept"
TRANSPORT_HEADER = "X-Chroma-Transport"
# a reply header: the server could not open the named file, so the client resends the body
SHM_UNREADABLE = "unreadable"

# (method, path, operation); path parameters and query strings become parameters
ROUTES = [(op.method, op.path, op.name) for op in OPERATIONS]


def encode_arrow(params: dict, table: pa.Table) -> bytes:
    """An Arrow IPC stream of ``table`` carrying ``params`` in its schema metadata."""
    sink = pa.BufferOutputStream()
    write_arrow(sink, params, table)
    return sink.getvalue().to_pybytes()


def write_arrow(sink, params: dict, table: pa.Table) -> None:
    """Write the Arrow IPC stream of ``params`` and ``table`` to ``sink`` (an Arrow output
    stream or a binary file)."""
    metadata = dict(table.schema.metadata or {})
    metadata[PARAMS_KEY] = json.dumps(params, default=_json_default).encode()
    table = table.replace_schema_metadata(metadata)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def decode_arrow(body) -> tuple[dict, pa.Table]:
    """The params and table of an Arrow IPC stream held in ``body`` (bytes or any buffer,
    such as a memory map; the table refers to it without a copy); ``MalformedPayload`` if
    it is not one."""
    try:
        with pa.ipc.open_stream(pa.py_buffer(body)) as reader:
            table = reader.read_all()
        # offsets that point past their values, and the like: refused here, not met later
        # (the structure only: text that is not UTF-8 is named by the schema's checks)
        table.validate()
    except (pa.ArrowInvalid, pa.ArrowException, OSError, ValueError) as exc:
        raise MalformedPayload(f"the body is not a readable Arrow IPC stream: {exc}") from None
    metadata = dict(table.schema.metadata or {})
    raw = metadata.pop(PARAMS_KEY, b"{}")
    params = decode_json(raw)
    return params, table.replace_schema_metadata(metadata or None)


def encode_json(params: dict) -> bytes:
    return json.dumps(params, default=_json_default).encode()


def decode_json(body: bytes) -> dict:
    if not body:
        return {}
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedPayload(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise MalformedPayload("the body is nested too deeply to read") from None
    if not isinstance(value, dict):
        raise MalformedPayload("the JSON body must be an object")
    return value


def decode_json_request(body: bytes) -> tuple[dict, pa.Table | None]:
    """The params of a JSON request and its table, which a JSON request (a browser's) may
    carry as ``rows``: a list of objects, one per row, keyed by column."""
    params = decode_json(body)
    if "rows" not in params:
        return params, None
    rows = params.pop("rows")
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise MalformedPayload("rows must be a list of objects, one per row")
    try:
        return params, pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        raise MalformedPayload(f"rows cannot be read as a table: {exc}") from None


def asks_json(accept: str | None) -> bool:
    """Whether a request's Accept header asks for JSON rather than Arrow (a browser does;
    the client sends neither, and gets Arrow)."""
    return accept is not None and JSON_TYPE in accept and ARROW_TYPE not in accept


def encode_json_table(params: dict, table: pa.Table) -> bytes:
    """``params`` with the table's rows under ``"rows"``, as JSON objects; NaN becomes null
    (JSON has no NaN)."""
    columns = []
    for column in table.columns:
        if pa.types.is_floating(column.type):
            column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)
        columns.append(column)
    rows = pa.Table.from_arrays(columns, names=table.column_names).to_pylist()
    return encode_json({**params, "rows": rows})


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot send {type(value).__name__} as JSON")
