"""Files ``chroma load`` reads, each as an Arrow schema and a stream of record batches.

Parquet is read a batch at a time through a buffered stream, so memory follows the batch
and not the file's row groups (which writers make up to a million rows long); Arrow IPC
(Feather v2) files are memory-mapped and read a record batch at a time; CSV goes through
pyarrow's streaming reader; ``.npy`` through a memory map. So a file larger than memory
loads in bounded memory. ``.npz`` members are read whole (the format compresses each array
as one piece): one array of shape (n, d) is a column of vectors, one of shape (n,) a plain
column.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Set
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".feather": "arrow",
    ".arrow": "arrow",
    ".ipc": "arrow",
    ".csv": "csv",
    ".npy": "npy",
    ".npz": "npz",
}
#: compressed CSV pyarrow decompresses while it reads
COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")
#: bytes of CSV parsed at a time: the reader's memory grows with it times the columns (8 MiB
#: held over 250 MB for a 131-column file); the first block decides the types of the
#: columns no option maps
CSV_BLOCK = 1 << 20
#: bytes a Parquet reader reads ahead of the batch it decodes
PARQUET_BUFFER = 8 << 20
#: the column name a bare ``.npy`` array of vectors gets
NPY_COLUMN = "embedding"


class SourceError(Exception):
    """A file cannot be read as asked; the message names the file and the problem."""


@dataclass
class Source:
    """One input file: its columns, its row count when the format tells it cheaply, and
    its batches."""

    path: Path
    format: str
    schema: pa.Schema
    rows: int | None
    _arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def batches(
        self,
        columns: list[str],
        size: int,
        text: Set[str] = frozenset(),
        floats: Set[str] = frozenset(),
    ) -> Iterator[pa.RecordBatch]:
        """Batches of at most ``size`` rows holding ``columns``. CSV reads the ``text``
        columns as strings and the ``floats`` as float32 whatever they look like."""
        try:
            if self.format == "parquet":
                parquet = _parquet(self.path)
                yield from _rebatched(parquet.iter_batches(batch_size=size, columns=columns), size)
            elif self.format == "arrow":
                yield from _rebatched(_arrow_batches(self.path, columns), size)
            elif self.format == "csv":
                yield from _rebatched(self._csv(columns, text, floats), size)
            else:
                yield from self._numpy_batches(columns, size)
        except (pa.ArrowException, OSError, ValueError, zipfile.BadZipFile) as exc:
            raise SourceError(f"{self.path}: cannot read it as {self.format}: {exc}") from None

    def _csv(self, columns, text, floats) -> Iterator[pa.RecordBatch]:
        types = {name: pa.string() for name in text} | {name: pa.float32() for name in floats}
        reader = pa_csv.open_csv(
            self.path,
            # threads would parse blocks ahead of a slower consumer, into unbounded memory
            read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK, use_threads=False),
            convert_options=pa_csv.ConvertOptions(
                include_columns=columns, column_types=types, strings_can_be_null=True
            ),
        )
        with reader:
            yield from reader

    def _numpy_batches(self, columns, size) -> Iterator[pa.RecordBatch]:
        arrays = self._arrays or {NPY_COLUMN: np.load(self.path, mmap_mode="r")}
        n = len(next(iter(arrays.values()))) if arrays else 0
        for start in range(0, n, size):
            yield pa.RecordBatch.from_pydict(
                {name: _arrow(arrays[name][start : start + size]) for name in columns}
            )


def open_source(path: Path, format: str | None = None) -> Source:
    """The file at ``path`` as a :class:`Source`; ``format`` overrides the file's suffix."""
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    kind = format or _format_of(path)
    try:
        if kind == "parquet":
            parquet = _parquet(path)
            return Source(path, kind, parquet.schema_arrow, parquet.metadata.num_rows)
        if kind == "arrow":
            with pa.memory_map(str(path)) as mapped:
                reader = pa.ipc.open_file(mapped)
                # count_rows reads the batches' metadata only; older pyarrow lacks it
                count = getattr(reader, "count_rows", None)
                return Source(path, kind, reader.schema, count() if count else None)
        if kind == "csv":
            return Source(path, kind, _csv_schema(path), _csv_rows(path))
        if kind == "npy":
            array = np.load(path, mmap_mode="r")
            _check_matrix(path, NPY_COLUMN, array)
            schema = pa.schema([(NPY_COLUMN, _arrow(array[:0]).type)])
            return Source(path, kind, schema, len(array))
        if kind == "npz":
            return _npz(path)
    except (pa.ArrowException, OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise SourceError(f"{path}: cannot read it as {kind}: {exc}") from None
    raise SourceError(f"{path}: unknown format {kind!r}")


def _format_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in COMPRESSED and suffixes[-2] == ".csv":
        return "csv"
    kind = FORMATS.get(suffixes[-1] if suffixes else "")
    if kind is None:
        known = ", ".join(sorted(FORMATS))
        raise SourceError(
            f"{path}: cannot tell the format from its name (known: {known}); give --format"
        )
    return kind


def _parquet(path: Path) -> pq.ParquetFile:
    return pq.ParquetFile(path, buffer_size=PARQUET_BUFFER, pre_buffer=False)


def _arrow_batches(path: Path, columns: list[str]) -> Iterator[pa.RecordBatch]:
    with pa.memory_map(str(path)) as mapped:
        reader = pa.ipc.open_file(mapped)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i).select(columns)


def _csv_schema(path: Path) -> pa.Schema:
    reader = pa_csv.open_csv(path, read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK))
    with reader:
        return reader.schema


def _csv_rows(path: Path) -> int | None:
    """Rows of an uncompressed CSV, by counting lines (a quoted line break makes it an
    overestimate, which only the progress bar sees); None for compressed files."""
    if path.suffix.lower() in COMPRESSED:
        return None
    lines, last = 0, b"\n"
    with open(path, "rb") as file:
        while chunk := file.read(16 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return max(lines + (last != b"\n") - 1, 0)


def _npz(path: Path) -> Source:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    lengths = {name: len(array) for name, array in arrays.items() if array.ndim >= 1}
    if not arrays:
        raise SourceError(f"{path}: the archive holds no arrays")
    if len(set(lengths.values())) > 1 or len(lengths) != len(arrays):
        shapes = ", ".join(f"{name} {arrays[name].shape}" for name in arrays)
        raise SourceError(f"{path}: its arrays must all have one row per input, got {shapes}")
    for name, array in arrays.items():
        if array.ndim > 2:
            raise SourceError(f"{path}: array {name!r} has shape {array.shape}; want 1-D or 2-D")
    schema = pa.schema([(name, _arrow(array[:0]).type) for name, array in arrays.items()])
    return Source(path, "npz", schema, next(iter(lengths.values())), arrays)


def _check_matrix(path: Path, name: str, array: np.ndarray) -> None:
    if array.ndim != 2 or array.dtype.kind not in "iuf":
        raise SourceError(
            f"{path}: want a 2-D array of numbers (n, d) in {name!r}, "
            f"got {array.dtype} of shape {array.shape}"
        )


def _arrow(array: np.ndarray) -> pa.Array:
    if array.ndim == 2:
        flat = pa.array(np.ascontiguousarray(array).reshape(-1))
        return pa.FixedSizeListArray.from_arrays(flat, array.shape[1])
    if array.dtype.kind in "US":
        return pa.array(array.astype(str), pa.string())
    return pa.array(array)


def _rebatched(batches, size: int) -> Iterator[pa.RecordBatch]:
    """``batches`` cut or joined into batches of ``size`` rows (the last may be shorter):
    readers hand out what their blocks or row groups hold."""
    held: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        while batch.num_rows:
            take = min(size - count, batch.num_rows)
            held.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count == size:
                yield pa.Table.from_batches(held).combine_chunks().to_batches()[0]
                held, count = [], 0
    if count:
        yield pa.Table.from_batches(held).combine_chunks().to_batches()[0]
