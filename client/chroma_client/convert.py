"""Turn what users hold (numpy, lists, pandas, pyarrow, tensors) into the rows Arrow table."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from chroma_client.errors import DimensionMismatch, InvalidInput
from chroma_core.filters import class_name


def as_matrix(embeddings, name: str = "embeddings") -> np.ndarray:
    """A C-contiguous float32 (n, d) array from any supported container."""
    value = embeddings
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensors
        value = value.detach().cpu().numpy()
    if isinstance(value, pa.Table):
        if "embedding" in value.column_names:
            value = value.column("embedding")
        elif value.num_columns == 1:
            value = value.column(0)
        else:
            value = np.column_stack(
                [_numeric(value.column(i), name) for i in range(value.num_columns)]
            )
    if isinstance(value, pa.ChunkedArray):
        value = value.combine_chunks()
    if isinstance(value, pa.Array):
        value = _list_array(value, name)
    if isinstance(value, pd.DataFrame):
        value = value["embedding"] if "embedding" in value.columns else value.to_numpy()
    if isinstance(value, pd.Series):
        value = value.to_list()
    if isinstance(value, list | tuple) and value and not np.isscalar(value[0]):
        lengths = {len(v) for v in value if hasattr(v, "__len__")}
        if len(lengths) > 1:
            raise DimensionMismatch(
                f"{name} have mixed dimensions: {', '.join(str(n) for n in sorted(lengths)[:5])}"
            )
    try:
        matrix = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{name} cannot be read as an (n, d) array of numbers: {exc}") from None
    if matrix.dtype == object or not (
        np.issubdtype(matrix.dtype, np.number) or matrix.dtype == bool
    ):
        raise InvalidInput(
            f"{name} must hold numbers, got {matrix.dtype} from {type(embeddings).__name__}"
        )
    if matrix.ndim != 2:
        raise InvalidInput(
            f"{name} must be 2-D (n, d), got shape {matrix.shape}; wrap one vector as [vector]"
        )
    if matrix.shape[0] == 0:
        raise InvalidInput(f"{name} are empty: pass at least one row")
    if matrix.shape[1] == 0:
        raise InvalidInput(f"{name} have dimension 0")
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        bad = np.nonzero(~finite)[0]
        raise InvalidInput(
            f"{name} contain NaN or infinite values in {len(bad)} rows (first: row {bad[0]})"
        )
    return matrix


def _numeric(column, name):
    if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
        raise InvalidInput(f"{name} columns must be numeric, got {column.type}")
    return column.to_numpy()


def _list_array(array: pa.Array, name: str) -> np.ndarray:
    if pa.types.is_fixed_size_list(array.type):
        return (
            array.flatten().to_numpy(zero_copy_only=False).reshape(len(array), array.type.list_size)
        )
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        lengths = pa.compute.list_value_length(array).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            raise DimensionMismatch(f"{name} have mixed dimensions in the Arrow list column")
        values = array.flatten().to_numpy(zero_copy_only=False)
        return values.reshape(len(array), int(lengths[0]) if len(lengths) else 0)
    raise InvalidInput(f"{name} must be an Arrow list column, got {array.type}")


def text_column(name: str, values, n: int) -> pa.Array:
    """A string column of ``n`` rows from a scalar (repeated), a sequence, or None."""
    if values is None:
        return pa.nulls(n, pa.string())
    if isinstance(values, str | int | float | bool | np.generic):
        return pa.array(np.full(n, class_name(_py(values)), dtype=object), pa.string())
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pd.Series | pd.Index):
        values = values.to_numpy()
    if isinstance(values, Mapping) or not hasattr(values, "__len__"):
        raise InvalidInput(
            f"{name} must be one value or a sequence of {n} values, got {type(values).__name__}"
        )
    if len(values) != n:
        raise InvalidInput(f"{name} has {len(values)} values for {n} embeddings")
    if isinstance(values, pa.Array):
        array = values
    else:
        array = np.asarray(values) if not isinstance(values, np.ndarray) else values
        if array.ndim != 1:
            raise InvalidInput(f"{name} must be one-dimensional, got shape {array.shape}")
        if array.dtype.kind == "f":
            finite = np.isfinite(array)
            if finite.all() and np.all(array == np.round(array)):
                array = array.astype(np.int64)
            elif not finite.all() and np.all(array[finite] == np.round(array[finite])):
                # NaN marks a missing value in a float array of classes
                return pa.array(array, from_pandas=True).cast(pa.int64()).cast(pa.string())
        if array.dtype.kind in "iufb":
            return pa.array(array, from_pandas=True).cast(pa.string())
        array = pa.array(
            [None if _missing(v) else class_name(_py(v)) for v in array.tolist()], pa.string()
        )
    if pa.types.is_string(array.type) or pa.types.is_null(array.type):
        return array.cast(pa.string())
    if (
        pa.types.is_large_string(array.type)
        or pa.types.is_integer(array.type)
        or pa.types.is_boolean(array.type)
    ):
        return array.cast(pa.string())
    raise InvalidInput(f"{name} must hold strings or numbers, got {array.type}")


def _py(value):
    return value.item() if isinstance(value, np.generic) else value


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def metadata_column(metadata, n: int) -> pa.Array:
    if metadata is None:
        return pa.nulls(n, pa.string())
    if isinstance(metadata, pd.DataFrame):
        if len(metadata) != n:
            raise InvalidInput(f"metadata has {len(metadata)} rows for {n} embeddings")
        bad = [c for c in metadata.columns if not isinstance(c, str)]
        if bad:
            raise InvalidInput(f"metadata column names must be strings, got {bad[0]!r}")
        lines = metadata.to_json(orient="records", lines=True, date_format="iso").splitlines()
        return pa.array(lines, pa.string())
    if isinstance(metadata, Mapping):
        raise InvalidInput("metadata takes a list of dicts (one per row) or a DataFrame")
    if not hasattr(metadata, "__len__") or isinstance(metadata, str):
        raise InvalidInput(
            f"metadata must be a list of dicts or a DataFrame, got {type(metadata).__name__}"
        )
    if len(metadata) != n:
        raise InvalidInput(f"metadata has {len(metadata)} entries for {n} embeddings")
    texts: list[str | None] = []
    for i, entry in enumerate(metadata):
        if entry is None:
            texts.append(None)
            continue
        if not isinstance(entry, Mapping):
            raise InvalidInput(f"metadata of row {i} must be a dict, got {type(entry).__name__}")
        try:
            texts.append(json.dumps(entry, default=_json_value, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"metadata of row {i} cannot be stored as JSON: {exc}") from None
    return pa.array(texts, pa.string())


def _json_value(value):
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def outputs_column(outputs, n: int) -> pa.Array:
    if outputs is None:
        return pa.nulls(n, pa.list_(pa.float32()))
    matrix = as_matrix(outputs, "outputs")
    if len(matrix) != n:
        raise InvalidInput(f"outputs has {len(matrix)} rows for {n} embeddings")
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1]).cast(
        pa.list_(pa.float32())
    )


def id_column(ids, n: int) -> pa.Array:
    if ids is None:
        prefix = uuid.uuid4().hex[:16] + "-"
        return pa.array(np.char.add(prefix, np.arange(n).astype(str)).astype(object), pa.string())
    column = text_column("ids", ids, n)
    if isinstance(ids, str):
        raise InvalidInput("ids must be a sequence with one id per embedding")
    if column.null_count:
        raise InvalidInput("ids must not contain None")
    if pa.compute.count_distinct(column).as_py() != n:
        raise InvalidInput("ids contain duplicates")
    return column


def rows_table(
    embeddings, *, dataset, context, input_uris, inferences, outputs, labels, metadata, ids
) -> pa.Table:
    """The batch :meth:`Space.add` sends, checked here so nothing is sent when input is bad."""
    matrix = as_matrix(embeddings)
    n, d = matrix.shape
    if dataset is None:
        raise InvalidInput("dataset is required: name the data set these inputs come from")
    columns = {
        "id": id_column(ids, n),
        "dataset": text_column("dataset", dataset, n),
        "context": text_column("context", context, n),
        "input_uri": text_column("input_uris", input_uris, n),
        "inference": text_column("inferences", inferences, n),
        "label": text_column("labels", labels, n),
        "metadata": metadata_column(metadata, n),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), d),
        "output": outputs_column(outputs, n),
    }
    for name in ("dataset", "context"):
        if columns[name].null_count:
            raise InvalidInput(f"{name} must not be None")
    return pa.table(columns)


def queries_table(queries) -> pa.Table:
    matrix = as_matrix(queries, "queries")
    return pa.table(
        {
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(matrix.reshape(-1)), matrix.shape[1]
            )
        }
    )
