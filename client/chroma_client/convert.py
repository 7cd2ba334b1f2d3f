"""Turn what users hold (numpy, lists, pandas, pyarrow, tensors) into the rows Arrow table.

Every check runs on whole columns up front (numpy and pyarrow.compute, no loop per row);
the embeddings are converted to Arrow one slice at a time, so a large input is never held
twice.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from chroma_client.errors import DimensionMismatch, InvalidInput
from chroma_wire.checks import check_text, check_unicode, class_name
from chroma_wire.limits import MAX_ID_CHARS, MAX_METADATA_CHARS, MAX_TEXT_CHARS

# rows per step of the NaN check, which keeps its temporary arrays small
_CHECK_ROWS = 32_768

# Space.add's per-row fields: (parameter name, column name)
_TEXT_FIELDS = (
    ("dataset", "dataset"),
    ("context", "context"),
    ("input_uris", "input_uri"),
    ("inferences", "inference"),
    ("labels", "label"),
)


def as_matrix(embeddings, name: str = "embeddings") -> np.ndarray:
    """A C-contiguous float32 (n, d) array from any supported container."""
    return np.ascontiguousarray(numeric_matrix(embeddings, name), dtype=np.float32)


def numeric_matrix(embeddings, name: str = "embeddings") -> np.ndarray:
    """The (n, d) array of finite numbers in any supported container, checked but not yet
    converted to float32 (a numpy array is not copied)."""
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
    if np.issubdtype(matrix.dtype, np.complexfloating):
        # float32 would keep the real part and drop the rest without a word
        raise InvalidInput(f"{name} must hold real numbers, got {matrix.dtype}")
    if matrix.ndim != 2:
        raise InvalidInput(
            f"{name} must be 2-D (n, d), got shape {matrix.shape}; wrap one vector as [vector]"
        )
    if matrix.shape[0] == 0:
        raise InvalidInput(f"{name} are empty: pass at least one row")
    if matrix.shape[1] == 0:
        raise InvalidInput(f"{name} have dimension 0")
    _check_finite(matrix, name)
    return matrix


def _check_finite(matrix: np.ndarray, name: str) -> None:
    """NaN or infinity anywhere, as float32 sees it (a float64 too large for float32 is
    infinite once stored)."""
    if not np.issubdtype(matrix.dtype, np.floating):
        return
    for start in range(0, len(matrix), _CHECK_ROWS):
        part = np.asarray(matrix[start : start + _CHECK_ROWS], dtype=np.float32)
        if not np.isfinite(part).all():
            break
    else:
        return
    finite = np.concatenate(
        [
            np.isfinite(np.asarray(matrix[i : i + _CHECK_ROWS], dtype=np.float32)).all(axis=1)
            for i in range(0, len(matrix), _CHECK_ROWS)
        ]
    )
    bad = np.nonzero(~finite)[0]
    raise InvalidInput(
        f"{name} contain NaN or infinite values in {len(bad)} rows (first: row {bad[0]})"
    )


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
        lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            raise DimensionMismatch(f"{name} have mixed dimensions in the Arrow list column")
        values = array.flatten().to_numpy(zero_copy_only=False)
        return values.reshape(len(array), int(lengths[0]) if len(lengths) else 0)
    raise InvalidInput(f"{name} must be an Arrow list column, got {array.type}")


def _float32_list(matrix: np.ndarray) -> pa.FixedSizeListArray:
    flat = np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), matrix.shape[1])


# --- text -----------------------------------------------------------------------
def text_column(name: str, values, n: int) -> pa.Array:
    """A string column of ``n`` rows from a scalar (repeated), a sequence, or None."""
    return _expand(text_values(name, values, n), 0, n)


def text_values(name: str, values, n: int) -> pa.Array | str | None:
    """``values`` as text: one string for a scalar (repeated when sliced), a string array of
    ``n`` rows for a sequence, None for None."""
    if values is None:
        return None
    if isinstance(values, str | int | float | bool | np.generic):
        text = class_name(_py(values))
        check_unicode(name, text)
        if "\x00" in text:
            raise InvalidInput(f"{name} must not contain NUL characters")
        return text
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
    array = values if isinstance(values, pa.Array) else _python_text(values)
    if array is None:
        try:
            array = _numpy_text(
                name, values if isinstance(values, np.ndarray) else np.asarray(values)
            )
        except UnicodeError:
            check_unicode(name, "".join(str(v) for v in values))
            raise
    if not _prints_as_text(array.type):
        raise InvalidInput(f"{name} must hold strings or numbers, got {array.type}")
    array = array.cast(pa.string())
    check_text(name, array)
    return array


def _python_text(values) -> pa.Array | None:
    """A list of strings (and None) as Arrow, straight from Python: numpy would drop a
    trailing NUL character, which the text checks must see."""
    if not isinstance(values, list | tuple):
        return None
    try:
        array = pa.array(values, from_pandas=True)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        return None
    return array if pa.types.is_string(array.type) else None


def _prints_as_text(kind: pa.DataType) -> bool:
    """Strings, nulls, ints and bools: cast to string they read as class_name prints them."""
    t = pa.types
    return (
        t.is_string(kind)
        or t.is_large_string(kind)
        or t.is_null(kind)
        or t.is_integer(kind)
        or t.is_boolean(kind)
    )


def _numpy_text(name: str, array: np.ndarray) -> pa.Array:
    if array.ndim != 1:
        raise InvalidInput(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.dtype.kind == "U":
        if array.dtype.itemsize and len(array):
            # Arrow ends each string at its first NUL; numpy pads with NULs at the end
            codes = np.ascontiguousarray(array).view(np.uint32).reshape(len(array), -1) == 0
            if (codes[:, :-1] & ~codes[:, 1:]).any():
                raise InvalidInput(f"{name} must not contain NUL characters")
        return pa.array(array, pa.string())
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if finite.all() and np.all(array == np.round(array)):
            array = array.astype(np.int64)
        elif not finite.all() and np.all(array[finite] == np.round(array[finite])):
            # NaN marks a missing value in a float array of classes
            return pa.array(array, from_pandas=True).cast(pa.int64()).cast(pa.string())
    if array.dtype.kind in "iufb":
        return pa.array(array, from_pandas=True).cast(pa.string())
    if array.dtype.kind == "O":
        try:
            arrow = pa.array(array, from_pandas=True)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            arrow = None
        # strings, ints and bools print as class_name prints them; other types go one by one
        if arrow is not None and _prints_as_text(arrow.type):
            return arrow.cast(pa.string())
    return pa.array(
        [None if _missing(v) else class_name(_py(v)) for v in array.tolist()], pa.string()
    )


def _py(value):
    return value.item() if isinstance(value, np.generic) else value


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _expand(value: pa.Array | str | None, start: int, stop: int) -> pa.Array:
    if value is None:
        return pa.nulls(stop - start, pa.string())
    if isinstance(value, str):
        return pa.repeat(pa.scalar(value, pa.string()), stop - start)
    return value.slice(start, stop - start)


def _check_text(name: str, value: pa.Array | str | None, limit: int) -> None:
    if value is None:
        return
    if isinstance(value, str):
        longest = len(value)
    elif value.null_count == len(value):
        return
    else:
        longest = pc.max(pc.utf8_length(value)).as_py()
    if longest > limit:
        raise InvalidInput(f"{name} is longer than {limit} characters in some rows")


def _check_required(name: str, value: pa.Array | str | None) -> None:
    if value is None or (not isinstance(value, str) and value.null_count):
        raise InvalidInput(f"{name} must not be None")
    if value == "" or (
        not isinstance(value, str) and pc.any(pc.equal(pc.utf8_length(value), 0)).as_py()
    ):
        raise InvalidInput(f"{name} must not be empty")


# --- metadata, outputs, ids ------------------------------------------------------------
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
        column = pa.array(lines, pa.string())
        check_text("metadata", column, json_text=True)
        return column
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
        except RecursionError:
            raise InvalidInput(f"metadata of row {i} is nested too deeply") from None
    column = pa.array(texts, pa.string())
    check_text("metadata", column, json_text=True)
    return column


def _json_value(value):
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _outputs_matrix(outputs, n: int) -> np.ndarray | None:
    if outputs is None:
        return None
    matrix = numeric_matrix(outputs, "outputs")
    if len(matrix) != n:
        raise InvalidInput(f"outputs has {len(matrix)} rows for {n} embeddings")
    return matrix


def outputs_column(outputs, n: int) -> pa.Array:
    return _outputs_slice(_outputs_matrix(outputs, n), 0, n)


def _outputs_slice(matrix: np.ndarray | None, start: int, stop: int) -> pa.Array:
    if matrix is None:
        return pa.nulls(stop - start, pa.list_(pa.float32()))
    return _float32_list(matrix[start:stop]).cast(pa.list_(pa.float32()))


def id_values(ids, n: int) -> pa.Array | None:
    """The ids as a checked string array, or None when they are to be generated."""
    if ids is None:
        return None
    if isinstance(ids, str):
        raise InvalidInput("ids must be a sequence with one id per embedding")
    column = _expand(text_values("ids", ids, n), 0, n)
    if column.null_count:
        raise InvalidInput("ids must not contain None")
    if len(pc.unique(column)) != n:
        raise InvalidInput("ids contain duplicates")
    if pc.any(pc.equal(pc.utf8_length(column), 0)).as_py():
        raise InvalidInput("ids must not be empty")
    _check_text("ids", column, MAX_ID_CHARS)
    return column


def id_column(ids, n: int) -> pa.Array:
    column = id_values(ids, n)
    return _generated_ids(uuid.uuid4().hex[:16] + "-", 0, n) if column is None else column


def _generated_ids(prefix: str, start: int, stop: int) -> pa.Array:
    numbers = pc.cast(pa.array(np.arange(start, stop, dtype=np.int64)), pa.string())
    return pc.binary_join_element_wise(prefix, numbers, "")


# --- the batch ------------------------------------------------------------------
@dataclass(frozen=True)
class Rows:
    """The checked input of one :meth:`Space.add`, turned into Arrow a slice at a time."""

    matrix: np.ndarray
    text: dict[str, pa.Array | str | None]
    ids: pa.Array | None
    id_prefix: str
    metadata: pa.Array | None
    outputs: np.ndarray | None

    def __len__(self) -> int:
        return len(self.matrix)

    def spans(self, size: int) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` of each slice of at most ``size`` rows, in order."""
        for start in range(0, len(self), size):
            yield start, min(start + size, len(self))

    def table(self, start: int = 0, stop: int | None = None) -> pa.Table:
        """Rows ``start`` to ``stop`` as the table the service stores."""
        stop = len(self) if stop is None else stop
        columns = {
            "id": _generated_ids(self.id_prefix, start, stop)
            if self.ids is None
            else self.ids.slice(start, stop - start),
            **{name: _expand(value, start, stop) for name, value in self.text.items()},
            "metadata": _expand(self.metadata, start, stop),
            "embedding": _float32_list(self.matrix[start:stop]),
            "output": _outputs_slice(self.outputs, start, stop),
        }
        return pa.table(columns)


@dataclass
class Changes:
    """The checked input of one :meth:`Space.update`: ids and the fields given, turned into
    Arrow a slice at a time (a field not given is not sent, so it keeps its value)."""

    ids: pa.Array
    text: dict[str, pa.Array | str]
    metadata: pa.Array | None
    outputs: np.ndarray | None

    def __len__(self) -> int:
        return len(self.ids)

    def spans(self, size: int) -> Iterator[tuple[int, int]]:
        for start in range(0, len(self), size):
            yield start, min(start + size, len(self))

    def table(self, start: int = 0, stop: int | None = None) -> pa.Table:
        stop = len(self) if stop is None else stop
        columns = {"id": self.ids.slice(start, stop - start)}
        columns |= {name: _expand(value, start, stop) for name, value in self.text.items()}
        if self.metadata is not None:
            columns["metadata"] = _expand(self.metadata, start, stop)
        if self.outputs is not None:
            columns["output"] = _outputs_slice(self.outputs, start, stop)
        return pa.table(columns)


def check_changes(ids, *, dataset, context, input_uris, inferences, outputs, labels, metadata):
    """Check the whole input of :meth:`Space.update`, so nothing is sent when any of it is
    bad: ``ids`` of the stored rows and at least one field to set."""
    if ids is None:
        raise InvalidInput("update needs ids: the stored inputs to change")
    if isinstance(ids, str):
        ids = [ids]
    n = len(ids) if hasattr(ids, "__len__") else len(list(ids))
    id_array = id_values(ids, n)
    assert id_array is not None
    given = {"dataset": dataset, "context": context, "input_uris": input_uris,
             "inferences": inferences, "labels": labels}  # fmt: skip
    text = {
        column: text_values(name, given[name], n)
        for name, column in _TEXT_FIELDS
        if given[name] is not None
    }
    meta = metadata_column(metadata, n) if metadata is not None else None
    output_matrix = _outputs_matrix(outputs, n)
    if not text and meta is None and output_matrix is None:
        raise InvalidInput(
            "update needs a field to set: dataset, context, input_uris, inferences, "
            "outputs, labels or metadata"
        )
    for name in ("dataset", "context"):
        if name in text:
            _check_required(name, text[name])
    for name, column in _TEXT_FIELDS:
        if column in text:
            _check_text(name, text[column], MAX_TEXT_CHARS)
    _check_text("metadata", meta, MAX_METADATA_CHARS)
    return Changes(id_array, text, meta, output_matrix)  # type: ignore[arg-type]


def check_rows(
    embeddings, *, dataset, context, input_uris, inferences, outputs, labels, metadata, ids
) -> Rows:
    """Check the whole input of :meth:`Space.add`, so nothing is sent when any of it is bad."""
    matrix = numeric_matrix(embeddings)
    n = len(matrix)
    if dataset is None:
        raise InvalidInput("dataset is required: name the data set these inputs come from")
    id_array = id_values(ids, n)
    given = {
        "dataset": dataset,
        "context": context,
        "input_uris": input_uris,
        "inferences": inferences,
        "labels": labels,
    }
    text = {column: text_values(name, given[name], n) for name, column in _TEXT_FIELDS}
    meta = metadata_column(metadata, n) if metadata is not None else None
    output_matrix = _outputs_matrix(outputs, n)
    for name in ("dataset", "context"):
        _check_required(name, text[name])
    for name, column in _TEXT_FIELDS:
        _check_text(name, text[column], MAX_TEXT_CHARS)
    _check_text("metadata", meta, MAX_METADATA_CHARS)
    return Rows(matrix, text, id_array, uuid.uuid4().hex[:16] + "-", meta, output_matrix)


def queries_table(queries) -> pa.Table:
    return pa.table({"embedding": _float32_list(numeric_matrix(queries, "queries"))})


#: replies of at most this many rows become DataFrames without consolidating their columns
#: into blocks: the same frame, built in about two thirds of the time
SMALL_FRAME_ROWS = 10_000


def frame(table: pa.Table) -> pd.DataFrame:
    """``table`` as a DataFrame, as ``table.to_pandas()`` makes it."""
    return table.to_pandas(split_blocks=table.num_rows <= SMALL_FRAME_ROWS)
