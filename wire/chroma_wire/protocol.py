"""The private wire format between client and server, and its version.

A request or response is a dict of parameters and, for bulk data, one Arrow table. With a
table the body is an Arrow IPC stream whose schema metadata carries the dict as JSON under
``chroma.params``; without one the body is JSON. Both ends refuse another protocol version.

A client on the server's machine may instead write a request's Arrow stream to a file in
the directory ``GET /api/v1/shm`` advertises and send an empty body naming the file in
``X-Chroma-Shm`` (the server's side is ``chroma_core.shared_memory``); with
``X-Chroma-Shm-Reply: accept <key>`` (the key derived from the proof file's bytes, see
:func:`reply_key`) a large Arrow reply comes back the same way, named in the
``X-Chroma-Shm-Reply`` reply header. Every reply says in ``X-Chroma-Transport`` whether the
request came through ``shm`` or the ``socket``.
"""

from __future__ import annotations

import hashlib
import json
import struct

import pyarrow as pa
import pyarrow.compute as pc

from chroma_wire.errors import MalformedPayload, PayloadTooLarge
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


def reply_key(proof: bytes) -> str:
    """What a client that read the server's proof file sends after ``accept`` in
    ``X-Chroma-Shm-Reply``: a reply is parked in shared memory only for a client that can
    read that file, so a client elsewhere never makes the server park replies it cannot
    pick up."""
    return hashlib.sha256(b"chroma-shm-reply:" + proof).hexdigest()


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


def decode_arrow(body, max_bytes: int | None = None) -> tuple[dict, pa.Table]:
    """The params and table of an Arrow IPC stream held in ``body`` (bytes or any buffer,
    such as a memory map; the table refers to it without a copy); ``MalformedPayload`` if
    it is not one. With ``max_bytes``, a compressed stream that would hold more than that
    once decompressed is ``PayloadTooLarge``, found from its headers before anything is
    decompressed."""
    if max_bytes is not None:
        size = arrow_size(body)
        if size > max(max_bytes, len(memoryview(body))):
            raise PayloadTooLarge(
                f"the Arrow body holds {size} bytes once decompressed, more than the "
                f"{max_bytes} a request may carry (CHROMA_MAX_BODY_BYTES)"
            )
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


def arrow_size(body) -> int:
    """The bytes the record and dictionary batches of the Arrow IPC stream ``body`` hold
    once read: their buffers' lengths, and for a compressed buffer the length its header
    gives, read from the messages' metadata without decompressing anything."""
    total = 0
    try:
        for message in pa.ipc.MessageReader.open_stream(pa.py_buffer(body)):
            if message.type in ("record batch", "dictionary"):
                total += _batch_size(message.metadata, message.body)
    except (pa.ArrowException, OSError, ValueError, struct.error, IndexError) as exc:
        raise MalformedPayload(f"the body is not a readable Arrow IPC stream: {exc}") from None
    return total


def _batch_size(metadata: pa.Buffer, body: pa.Buffer | None) -> int:
    """The size of one batch message's buffers once decompressed, from its flatbuffer
    metadata (format/Message.fbs: Message.header, RecordBatch.buffers and .compression)."""
    meta = memoryview(metadata)
    data = memoryview(body) if body is not None else memoryview(b"")
    message = _FlatTable(meta, struct.unpack_from("<I", meta, 0)[0])
    header = message.child(2)
    if message.scalar(1, "B") == 2:  # a DictionaryBatch holds its RecordBatch as ``data``
        header = header.child(1)
    compressed = header.has(3)
    total = 0
    for offset, length in header.structs(2, "<qq"):
        if offset < 0 or length < 0 or offset + length > len(data):
            raise ValueError("a buffer lies outside the message body")
        if compressed and length >= 8:
            raw = struct.unpack_from("<q", data, offset)[0]
            total += length - 8 if raw == -1 else raw
        else:
            total += length
    return total


class _FlatTable:
    """A flatbuffer table at ``pos`` of ``buf``: its fields by number."""

    def __init__(self, buf: memoryview, pos: int):
        self.buf, self.pos = buf, pos
        vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        size = struct.unpack_from("<H", buf, vtable)[0]
        self.fields = struct.unpack_from(f"<{(size - 4) // 2}H", buf, vtable + 4)

    def has(self, field: int) -> bool:
        return field < len(self.fields) and self.fields[field] != 0

    def _at(self, field: int) -> int:
        if not self.has(field):
            raise ValueError(f"a batch message lacks field {field}")
        return self.pos + self.fields[field]

    def scalar(self, field: int, kind: str) -> int:
        return (
            struct.unpack_from("<" + kind, self.buf, self._at(field))[0] if self.has(field) else 0
        )

    def child(self, field: int) -> _FlatTable:
        at = self._at(field)
        return _FlatTable(self.buf, at + struct.unpack_from("<I", self.buf, at)[0])

    def structs(self, field: int, layout: str) -> list[tuple]:
        at = self._at(field)
        vector = at + struct.unpack_from("<I", self.buf, at)[0]
        count = struct.unpack_from("<I", self.buf, vector)[0]
        width = struct.calcsize(layout)
        return [struct.unpack_from(layout, self.buf, vector + 4 + width * i) for i in range(count)]


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
