"""Arrow as ClickHouse answers it, typed as the rest of Chroma reads it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def matrix(column: pa.ChunkedArray, dim: int | None = None) -> np.ndarray:
    """``(rows, dim)`` float32 of an ``Array(Float32)`` column; ``dim`` shapes an empty one."""
    column = column.combine_chunks()
    if len(column) == 0:
        return np.empty((0, dim or 0), dtype=np.float32)
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(len(column), -1)


def strings(table: pa.Table) -> pa.Table:
    """The table with text as plain strings (not dictionaries, large strings or binary) and
    seq as int64."""
    columns, names = [], []
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_dictionary(column.type):
            column = column.cast(pa.string())
        elif pa.types.is_large_string(column.type) or pa.types.is_binary(column.type):
            column = column.cast(pa.string())
        elif name == "seq":
            column = column.cast(pa.int64())
        columns.append(column)
        names.append(name)
    return pa.table(columns, names=names)
