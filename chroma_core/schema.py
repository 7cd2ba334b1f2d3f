"""The Arrow layout of a batch of rows, and the checks every batch passes before storage."""

from __future__ import annotations

import hashlib
import json
import re
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from chroma_wire.checks import check_text
from chroma_wire.errors import DimensionMismatch, InvalidInput
from chroma_wire.limits import (
    MAX_DIM,
    MAX_EXACT_INTEGER,
    MAX_ID_CHARS,
    MAX_METADATA_CHARS,
    MAX_TEXT_CHARS,
)
from chroma_wire.rows import REQUIRED_TEXT, TEXT_FIELDS, rows_schema


def embeddings_of(table: pa.Table) -> np.ndarray:
    """The (n, d) float32 matrix of a validated batch, without a copy where possible."""
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), dim)


def validate_rows(table: pa.Table, dim: int | None) -> pa.Table:
    """Check a batch and return it in the canonical schema.

    ``dim`` is the space's fixed dimension, or None before the first add. Raises
    :class:`InvalidInput` (or :class:`DimensionMismatch`) naming the field and row.
    """
    if not isinstance(table, pa.Table):
        raise InvalidInput(f"rows must be an Arrow table, got {type(table).__name__}")
    n = table.num_rows
    if n == 0:
        raise InvalidInput("the batch is empty: add at least one embedding")
    names = set(table.column_names)
    missing = [c for c in (*REQUIRED_TEXT, "embedding") if c not in names]
    if missing:
        raise InvalidInput(f"the batch lacks column(s): {', '.join(missing)}")
    unknown = names - set(TEXT_FIELDS) - {"embedding", "output"}
    if unknown:
        raise InvalidInput(f"unknown column(s) in the batch: {', '.join(sorted(unknown))}")

    matrix = embedding_matrix(table.column("embedding"), n)
    if dim is not None and matrix.shape[1] != dim:
        raise DimensionMismatch(
            f"embeddings have dimension {matrix.shape[1]} but this space holds dimension {dim}"
        )
    columns = {}
    for name in TEXT_FIELDS:
        columns[name] = _text(table, name, n)
    _check_ids(columns["id"])
    if columns["metadata"].null_count < n:
        _check_metadata(columns["metadata"])
    outputs = _outputs(table, n)
    d = matrix.shape[1]
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), d)
    return pa.Table.from_arrays([*columns.values(), embedding, outputs], schema=rows_schema(d))


def embedding_matrix(column: pa.ChunkedArray, n: int) -> np.ndarray:
    column = column.combine_chunks()
    t = column.type
    if column.null_count:
        raise InvalidInput("embedding is missing (null) in some rows")
    if pa.types.is_fixed_size_list(t):
        d = t.list_size
        values = column.flatten()
    elif pa.types.is_list(t) or pa.types.is_large_list(t):
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        d = int(lengths[0])
        bad = np.nonzero(lengths != d)[0]
        if len(bad):
            raise DimensionMismatch(
                f"embeddings have mixed dimensions: row 0 has {d}, row {bad[0]} has "
                f"{lengths[bad[0]]}"
            )
        values = column.flatten()
    else:
        raise InvalidInput(f"embedding must be a list of floats per row, got Arrow type {t}")
    if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
        raise InvalidInput(f"embedding values must be numbers, got Arrow type {values.type}")
    if d == 0:
        raise InvalidInput("embeddings have dimension 0")
    if d > MAX_DIM:
        raise InvalidInput(f"embeddings have dimension {d}, more than the limit {MAX_DIM}")
    if values.null_count:
        raise InvalidInput("embedding values contain nulls")
    matrix = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if matrix.size != n * d:
        raise InvalidInput("embedding column does not match the number of rows")
    matrix = matrix.reshape(n, d)
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        raise InvalidInput(
            f"embeddings contain NaN or infinite values ({int((~finite).sum())} rows, "
            f"first at row {row})"
        )
    return matrix


def _text(table: pa.Table, name: str, n: int) -> pa.Array:
    if name not in table.column_names:
        return pa.nulls(n, pa.string())
    column = table.column(name).combine_chunks()
    if pa.types.is_large_string(column.type):
        column = column.cast(pa.string())
    elif not (pa.types.is_string(column.type) or pa.types.is_null(column.type)):
        raise InvalidInput(f"{name} must be text, got Arrow type {column.type}")
    column = column.cast(pa.string())
    check_text(name, column, json_text=name == "metadata")
    if name in REQUIRED_TEXT:
        if column.null_count:
            raise InvalidInput(f"{name} is missing (null) in {column.null_count} rows")
        if pc.any(pc.equal(pc.utf8_length(column), 0)).as_py():
            raise InvalidInput(f"{name} must not be empty")
    limit = {"id": MAX_ID_CHARS, "metadata": MAX_METADATA_CHARS}.get(name, MAX_TEXT_CHARS)
    if n and column.null_count < n:
        longest = pc.max(pc.utf8_length(column)).as_py()
        if longest and longest > limit:
            raise InvalidInput(f"{name} is longer than {limit} characters in some rows")
    return column


def _check_ids(ids: pa.Array) -> None:
    unique = pc.count_distinct(ids).as_py()
    if unique != len(ids):
        counts = pc.value_counts(ids)
        dup = next(v["values"].as_py() for v in counts if v["counts"].as_py() > 1)
        raise InvalidInput(f"duplicate id in the batch: {dup!r:.80}")


def _check_metadata(column: pa.Array) -> None:
    for i, text in enumerate(column.to_pylist()):
        if text is None:
            continue
        value = metadata_object(i, text)
        if not isinstance(value, dict):
            raise InvalidInput(f"metadata of row {i} must be a JSON object")


# an integer beyond 2^53 has 16 digits or more: only texts holding such a run are parsed
# a second time, number by number
_LONG_DIGITS = re.compile(r"\d{16}")


def metadata_object(row: int, text: str):
    """The JSON value of row ``row``'s metadata text, refusing what stores would read another
    way: NaN and Infinity (not JSON; SQLite refuses them), a key twice in one object (SQLite
    reads the first, Python the last), integers beyond ±2^53 (compared exactly by one store
    and rounded by another) and nesting deeper than Python can follow."""
    try:
        if _LONG_DIGITS.search(text):
            return json.loads(
                text,
                object_pairs_hook=_unique_keys,
                parse_constant=_no_constant,
                parse_int=_exact_integer,
            )
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except _MetadataError as exc:
        raise InvalidInput(f"metadata of row {row} {exc}") from None
    except RecursionError:
        raise InvalidInput(f"metadata of row {row} is nested too deeply") from None
    except ValueError as exc:
        raise InvalidInput(f"metadata of row {row} is not valid JSON: {exc}") from None


class _MetadataError(Exception):
    pass


def _unique_keys(pairs: list) -> dict:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set = set()
        for key, _ in pairs:
            if key in seen:
                raise _MetadataError(f"has the key {key!r:.80} twice in one object")
            seen.add(key)
    return value


def _exact_integer(digits: str) -> int:
    value = int(digits)
    if abs(value) > MAX_EXACT_INTEGER:
        raise _MetadataError(
            f"holds the integer {digits:.40}, beyond ±2^53 ({MAX_EXACT_INTEGER}) where numbers "
            "stop being exact: metadata numbers are compared as 64-bit floats; send it as text"
        )
    return value


def _no_constant(name: str):
    raise _MetadataError(f"holds {name}, which JSON does not allow; send null instead")


def _outputs(table: pa.Table, n: int) -> pa.Array:
    if "output" not in table.column_names:
        return pa.nulls(n, pa.list_(pa.float32()))
    column = table.column("output").combine_chunks()
    if pa.types.is_null(column.type):
        return pa.nulls(n, pa.list_(pa.float32()))
    if not (
        pa.types.is_list(column.type)
        or pa.types.is_large_list(column.type)
        or pa.types.is_fixed_size_list(column.type)
    ):
        raise InvalidInput(f"output must be a list of floats per row, got {column.type}")
    try:
        column = column.cast(pa.list_(pa.float32()))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidInput(f"output values must be numbers: {exc}") from None
    values = column.flatten().to_numpy(zero_copy_only=False)
    if len(values) and not np.isfinite(values).all():
        raise InvalidInput("output contains NaN or infinite values")
    return column


def batch_fingerprint(rows: pa.Table) -> str:
    """A SHA-256 digest of every value of a validated batch, in its column order.

    A store keeps it with the batch's key: the batch sent again has the same digest, a
    different batch under the same key does not. It depends on the values only, not on how
    the Arrow arrays happen to be laid out (slices, chunks, what lies under a null)."""
    digest = hashlib.sha256()
    for name in rows.column_names:
        column = rows.column(name).combine_chunks()
        digest.update(f"{name}:{len(column)}:{column.null_count}:".encode())
        if column.null_count == len(column):
            continue
        if column.null_count:
            valid = column.is_valid().to_numpy(zero_copy_only=False)
            digest.update(np.packbits(valid).tobytes())
        if name == "embedding":
            digest.update(np.ascontiguousarray(embeddings_of(rows), dtype="<f4").data.cast("B"))
        elif pa.types.is_list(column.type):
            lengths = pc.list_value_length(column).fill_null(0)
            digest.update(lengths.to_numpy(zero_copy_only=False).astype("<i4").tobytes())
            values = column.flatten().to_numpy(zero_copy_only=False)
            digest.update(np.ascontiguousarray(values, dtype="<f4").tobytes())
        else:
            _digest_text(digest, column.cast(pa.string()).fill_null(""))
    return digest.hexdigest()


# hashlib lets go of the GIL while it hashes, so a digest taken on a thread beside the store's
# own work on the batch costs the add little on a second core
_digests = ThreadPoolExecutor(max_workers=2, thread_name_prefix="chroma-digest")


def batch_fingerprint_soon(rows: pa.Table) -> Future[str]:
    """:func:`batch_fingerprint` of ``rows`` taken on a worker thread."""
    return _digests.submit(batch_fingerprint, rows)


def _digest_text(digest, column: pa.Array) -> None:
    """Feed the lengths and bytes of a string array (no nulls) to ``digest``."""
    _, offsets_buffer, data = column.buffers()
    n = len(column)
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32, count=column.offset + n + 1)
    offsets = offsets[column.offset :]
    digest.update(np.diff(offsets).astype("<i4").tobytes())
    if data is not None and offsets[-1] > offsets[0]:
        digest.update(memoryview(data)[offsets[0] : offsets[-1]])
