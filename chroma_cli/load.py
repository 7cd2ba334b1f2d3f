"""``chroma load``: store the rows of Parquet, Arrow/Feather, CSV, ``.npy`` and ``.npz``
files in a space, a batch at a time.

Every file's columns are checked before anything is written. A load then stores all of
its rows or none: when a batch fails (a bad value found mid-file, a refused id, a lost
connection, Ctrl-C), the rows this load already stored are deleted again, and a space it
created is dropped.
"""

from __future__ import annotations

import difflib
import fnmatch
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from chroma_cli import output
from chroma_cli.options import json_option, with_client
from chroma_cli.sources import FORMATS, Source, SourceError, open_source
from chroma_client import Client, Space
from chroma_client.errors import ChromaError

DEFAULT_BATCH_ROWS = 20_000

# the client's per-row fields, each read from a column named like it unless mapped
FIELDS = {
    "id": ("ids", ("id",)),
    "label": ("labels", ("label",)),
    "inference": ("inferences", ("inference",)),
    "input_uri": ("input_uris", ("input_uri",)),
    "output": ("outputs", ("output", "outputs")),
}
EMBEDDING_NAMES = ("embedding", "embeddings")


class LoadError(Exception):
    """The input cannot be loaded as asked; the message names the file and the problem."""


@dataclass(frozen=True)
class Mapping:
    """Which column (or fixed value) becomes which field, as the options say."""

    embedding: str | None = None
    embedding_columns: str | None = None
    columns: dict[str, str | None] = field(default_factory=dict)
    dataset: str | None = None
    dataset_column: str | None = None
    context: str | None = None
    context_column: str | None = None
    metadata: tuple[str, ...] = ()


@dataclass
class Plan:
    """How one file's columns become rows: which columns to read and what each becomes."""

    source: Source
    embedding: list[str]  # one list column, or the fixed-size numeric columns in order
    fields: dict[str, str]  # client parameter -> column
    dataset: tuple[str, str]  # ("value", name) or ("column", name)
    context: tuple[str, str]
    metadata: list[str]
    dim: int | None  # known from the schema, else from the first batch

    @property
    def columns(self) -> list[str]:
        named = [*self.embedding, *self.fields.values(), *self.metadata]
        named += [name for kind, name in (self.dataset, self.context) if kind == "column"]
        return list(dict.fromkeys(named))

    @property
    def unused(self) -> list[str]:
        """The file's columns this load does not store."""
        kept = set(self.columns)
        return [name for name in self.source.schema.names if name not in kept]

    @property
    def text_columns(self) -> set[str]:
        """Columns a CSV reads as text whatever they look like: the per-row fields (a
        label 007 stays 007) and the list columns, which a CSV holds written out."""
        text = set(self.fields.values())
        text |= {name for kind, name in (self.dataset, self.context) if kind == "column"}
        if len(self.embedding) == 1:
            text.add(self.embedding[0])
        return text

    @property
    def float_columns(self) -> set[str]:
        """The columns of a vector held one dimension per column."""
        return set(self.embedding) if len(self.embedding) > 1 else set()


def plan_file(source: Source, mapping: Mapping) -> Plan:
    """Check that ``source`` has every column ``mapping`` names, with usable types."""
    names = source.schema.names
    path = source.path

    def column(name: str, what: str) -> str:
        if name not in names:
            raise LoadError(
                f"{path}: no column {name!r} for {what} (it has: {_listed(names, wanted=name)})"
            )
        return name

    embedding, dim = _embedding_columns(source, mapping)
    fields: dict[str, str] = {}
    for key, (parameter, defaults) in FIELDS.items():
        given = mapping.columns.get(key)
        if given is not None:
            fields[parameter] = column(given, f"--{key.replace('_', '-')}-column")
        else:
            found = next((d for d in defaults if d in names and d not in embedding), None)
            if found is not None:
                fields[parameter] = found
    dataset = _value_or_column(source, "dataset", mapping.dataset, mapping.dataset_column, None)
    context = _value_or_column(
        source, "context", mapping.context, mapping.context_column, "training"
    )
    metadata: list[str] = []
    for pattern in mapping.metadata:
        matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise LoadError(
                f"{path}: no column matches {pattern!r} for --metadata-column "
                f"(it has: {_listed(names, wanted=pattern)})"
            )
        metadata += [n for n in matched if n not in metadata]
    for name in metadata:
        kind = source.schema.field(name).type
        if not (pa.types.is_primitive(kind) or pa.types.is_string(kind)):
            raise LoadError(f"{path}: metadata column {name!r} holds {kind}; want numbers or text")
    return Plan(source, embedding, fields, dataset, context, metadata, dim)


def _embedding_columns(source: Source, mapping: Mapping) -> tuple[list[str], int | None]:
    schema, path = source.schema, source.path
    if mapping.embedding and mapping.embedding_columns:
        raise click.UsageError("give --embedding-column or --embedding-columns, not both")
    if mapping.embedding_columns:
        pattern = mapping.embedding_columns
        if not any(ch in pattern for ch in "*?["):
            pattern += "*"  # a bare prefix
        matched = [n for n in schema.names if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise LoadError(
                f"{path}: no column matches {mapping.embedding_columns!r} for the embedding "
                f"(it has: {_listed(schema.names)})"
            )
        for name in matched:
            kind = schema.field(name).type
            numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
            if not numeric and not (source.format == "csv" and pa.types.is_string(kind)):
                raise LoadError(f"{path}: embedding column {name!r} holds {kind}, not numbers")
        return matched, len(matched)
    name = mapping.embedding
    if name is None:
        name = next((n for n in EMBEDDING_NAMES if n in schema.names), None)
        if name is None:
            raise LoadError(
                f"{path}: no 'embedding' column; name it with --embedding-column COLUMN, or "
                f"--embedding-columns PREFIX for one numeric column per dimension "
                f"(it has: {_listed(schema.names)})"
            )
    if name not in schema.names:
        raise LoadError(
            f"{path}: no column {name!r} for the embedding "
            f"(it has: {_listed(schema.names, wanted=name)})"
        )
    kind = schema.field(name).type
    if pa.types.is_fixed_size_list(kind) and _numeric(kind.value_type):
        return [name], kind.list_size
    if (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and _numeric(kind.value_type):
        return [name], None
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind):
        return [name], None  # lists written out as text, e.g. "[0.1, 0.2]" in a CSV
    raise LoadError(
        f"{path}: embedding column {name!r} holds {kind}; want a list of numbers per row "
        "(or --embedding-columns PREFIX for one column per dimension)"
    )


def _value_or_column(source, name, value, column, default) -> tuple[str, str]:
    if value is not None and column is not None:
        raise click.UsageError(f"give --{name} or --{name}-column, not both")
    if value is not None:
        return ("value", value)
    if column is not None:
        if column not in source.schema.names:
            raise LoadError(
                f"{source.path}: no column {column!r} for --{name}-column "
                f"(it has: {_listed(source.schema.names, wanted=column)})"
            )
        return ("column", column)
    if name in source.schema.names:
        return ("column", name)
    if default is None:
        raise click.UsageError(
            f"say which {name} the rows belong to: --{name} NAME, or --{name}-column COLUMN"
        )
    return ("value", default)


def _numeric(kind: pa.DataType) -> bool:
    return pa.types.is_floating(kind) or pa.types.is_integer(kind)


def _listed(names: list[str], limit: int = 12, wanted: str | None = None) -> str:
    """``names`` (the first ``limit`` of them), and with ``wanted`` the closest to it."""
    shown = ", ".join(names[:limit])
    shown += f" and {len(names) - limit} more" if len(names) > limit else ""
    close = difflib.get_close_matches(wanted, names, n=1, cutoff=0.6) if wanted else []
    return shown + (f"; did you mean {close[0]!r}?" if close else "")


# --- one batch -----------------------------------------------------------------------
def batch_arguments(plan: Plan, batch: pa.RecordBatch, start: int, dim: int | None) -> dict:
    """The keyword arguments of ``Space.add`` for ``batch``, whose first row is row
    ``start`` of the file; every problem is reported with the file and its row number."""
    path = plan.source.path
    matrix = _matrix(plan, batch, start)
    if dim is not None and matrix.shape[1] != dim:
        raise LoadError(
            f"{path}: row {start}: the embedding has dimension {matrix.shape[1]}, "
            f"the rest of this load {dim}"
        )
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise LoadError(f"{path}: row {start + bad}: the embedding holds NaN or infinity")
    arguments: dict = {"embeddings": matrix}
    for parameter, name in plan.fields.items():
        values = batch.column(name)
        if parameter == "outputs":
            arguments[parameter] = _vectors(values, path, start, "output")
        elif pa.types.is_floating(values.type):
            # classes stored as floats (3.0) read as 3, as the client does for numpy input
            arguments[parameter] = values.to_numpy(zero_copy_only=False)
        else:
            arguments[parameter] = values
    for key, (kind, name) in (("dataset", plan.dataset), ("context", plan.context)):
        arguments[key] = name if kind == "value" else batch.column(name)
    if plan.metadata:
        arguments["metadata"] = batch.select(plan.metadata).to_pandas()
    return arguments


def _matrix(plan: Plan, batch: pa.RecordBatch, start: int) -> np.ndarray:
    path = plan.source.path
    if len(plan.embedding) > 1:
        parts = [
            batch.column(n).cast(pa.float32()).to_numpy(zero_copy_only=False)
            for n in plan.embedding
        ]
        return np.column_stack(parts)
    return _vectors(batch.column(plan.embedding[0]), path, start, "embedding")


def _vectors(column: pa.Array, path: Path, start: int, what: str) -> np.ndarray:
    """An (n, d) float32 matrix from a list column, or from lists written out as text."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = _parse_lists(column, path, start, what)
    if column.null_count:
        bad = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise LoadError(f"{path}: row {start + bad}: no {what}")
    if pa.types.is_fixed_size_list(column.type):
        size = column.type.list_size
    else:
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        size = int(lengths[0]) if len(lengths) else 0
        if (lengths != size).any():
            bad = int(np.flatnonzero(lengths != size)[0])
            raise LoadError(
                f"{path}: row {start + bad}: the {what} has {lengths[bad]} values, "
                f"row {start} has {size}"
            )
    values = column.flatten().cast(pa.float32()).to_numpy(zero_copy_only=False)
    return values.reshape(len(column), size)


def _parse_lists(column: pa.Array, path: Path, start: int, what: str) -> pa.Array:
    """``"[0.1, 0.2]"`` or ``"0.1 0.2"`` as a list of float32 per row."""
    text = pc.utf8_trim_whitespace(column)
    text = pc.replace_substring_regex(text, r"^\[|\]$", "")
    text = pc.utf8_trim_whitespace(text)
    parts = pc.split_pattern_regex(text, r"[,;\s]+")
    try:
        return parts.cast(pa.list_(pa.float32()))
    except pa.ArrowInvalid as exc:
        raise LoadError(
            f"{path}: rows from {start}: the {what} column holds something other than a list "
            f"of numbers: {exc}"
        ) from None


# --- the command ---------------------------------------------------------------------
@click.command()
@click.argument("space")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "format_",
    type=click.Choice(sorted(set(FORMATS.values()))),
    help="the files' format, when their names do not tell it",
)
@click.option("--embedding-column", metavar="COLUMN", help="a list column of vectors")
@click.option(
    "--embedding-columns",
    metavar="PATTERN",
    help="one numeric column per dimension: a prefix (e_) or a glob ('e_*'), in file order",
)
@click.option("--dataset", help="the data set every row comes from")
@click.option("--dataset-column", metavar="COLUMN", help="...or the column naming it per row")
@click.option("--context", help="training, triage, ... for every row (default training)")
@click.option("--context-column", metavar="COLUMN", help="...or the column naming it per row")
@click.option("--id-column", metavar="COLUMN", help="ids (default: the 'id' column, else made)")
@click.option("--label-column", metavar="COLUMN")
@click.option("--inference-column", metavar="COLUMN", help="the model's predicted class")
@click.option("--input-uri-column", metavar="COLUMN", help="where each input lives")
@click.option(
    "--outputs-column", metavar="COLUMN", help="a list column of class probabilities per row"
)
@click.option(
    "--metadata-column",
    "metadata",
    metavar="COLUMN",
    multiple=True,
    help="columns stored as metadata; repeat it, or give a glob ('meta_*')",
)
@click.option(
    "--metric",
    type=click.Choice(["l2", "cosine", "ip"]),
    help="distance of a space this load creates (default l2)",
)
@click.option(
    "--batch-rows",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_ROWS,
    show_default=True,
    help="rows read and stored at a time",
)
@click.option(
    "--progress/--no-progress", default=None, help="progress bar (default: on a terminal)"
)
@with_client(creates=True)
@json_option
def load(
    client: Client,
    space: str,
    files: tuple[Path, ...],
    format_: str | None,
    embedding_column: str | None,
    embedding_columns: str | None,
    dataset: str | None,
    dataset_column: str | None,
    context: str | None,
    context_column: str | None,
    id_column: str | None,
    label_column: str | None,
    inference_column: str | None,
    input_uri_column: str | None,
    outputs_column: str | None,
    metadata: tuple[str, ...],
    metric: str | None,
    batch_rows: int,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Store the rows of FILES in SPACE, creating it if missing.

    Reads Parquet, Arrow/Feather, CSV (also .csv.gz), .npy (one vector per row) and .npz
    (one array per column). Columns named embedding, id, dataset, context, label,
    inference, input_uri and output are taken as those fields unless an option maps
    another. Every file's columns are checked before anything is stored, and a load
    stores all its rows or none: if a batch fails, the rows already stored are removed.
    """
    mapping = Mapping(
        embedding=embedding_column,
        embedding_columns=embedding_columns,
        columns={
            "id": id_column,
            "label": label_column,
            "inference": inference_column,
            "input_uri": input_uri_column,
            "output": outputs_column,
        },
        dataset=dataset,
        dataset_column=dataset_column,
        context=context,
        context_column=context_column,
        metadata=tuple(part for given in metadata for part in given.split(",") if part),
    )
    try:
        plans = [plan_file(open_source(path, format_), mapping) for path in files]
    except SourceError as exc:
        raise LoadError(str(exc)) from None
    for plan in plans:
        if plan.dim is None:
            plan.dim = _first_dimension(plan)
    known = {plan.dim for plan in plans if plan.dim is not None}
    if len(known) > 1:
        dims = ", ".join(f"{p.source.path} {p.dim}" for p in plans if p.dim is not None)
        raise LoadError(f"the files' embeddings have different dimensions: {dims}")
    dim = next(iter(known), None)
    existing = _existing_space(client, space)
    if existing is not None:
        if metric is not None and metric != existing["metric"]:
            raise LoadError(
                f"space {space!r} exists with metric {existing['metric']!r}, not {metric!r}"
            )
        if existing["dim"] is not None and dim is not None and existing["dim"] != dim:
            raise LoadError(
                f"space {space!r} holds embeddings of dimension {existing['dim']}; "
                f"the files have dimension {dim}"
            )
    unused = {str(plan.source.path): plan.unused for plan in plans if plan.unused}
    if not as_json:
        for path, names in unused.items():
            click.echo(
                f"note: {path}: column{'s' if len(names) > 1 else ''} {_listed(names)} not "
                "stored (--metadata-column NAME keeps one as metadata)",
                err=True,
            )
    counted = [plan.source.rows for plan in plans]
    total = sum(n for n in counted if n is not None) if None not in counted else None
    if progress is None:
        progress = sys.stderr.isatty()
    started = time.perf_counter()
    target = client.space(space, metric=existing["metric"] if existing else metric or "l2")
    loading = Loading(client, target, created=existing is None)
    with tqdm(total=total, unit=" rows", unit_scale=True, disable=not progress, desc=space) as bar:
        try:
            for plan in plans:
                loading.load_file(plan, batch_rows, dim, bar)
        except BaseException as exc:
            bar.close()
            raise loading.undo(exc) from None
        finally:
            loading.close()
    seconds = time.perf_counter() - started
    summary = {
        "space": space,
        "rows": loading.stored,
        "files": len(plans),
        "seconds": round(seconds, 3),
        "rows_per_second": round(loading.stored / seconds, 1) if seconds > 0 else None,
        "space_count": target.count(),
        "created": existing is None,
        "unused_columns": unused,
    }
    if as_json:
        output.record(summary, as_json=True)
    else:
        _say_loaded(summary, existing is None)
    if not client.location.startswith(("http://", "https://")):
        _finish_index(target, progress)


def _finish_index(space: Space, progress: bool) -> None:
    """Embedded, this process indexes what it stored: finish now, saying so, rather than
    seem to hang on exit (a server indexes in the background instead)."""
    pending = space.status().get("index", {}).get("pending", 0)
    if not pending:
        return
    if progress:
        click.echo(f"indexing {pending:,} rows before exiting (Ctrl-C: later)", err=True)
    try:
        space.wait_for_index()
    except KeyboardInterrupt:
        # the rows are stored; the index catches up whenever the space is next opened
        click.echo("the index catches up the next time the space is opened", err=True)


def _say_loaded(summary: dict, created: bool) -> None:
    files = summary["files"]
    space = summary["space"]
    new = " (new space)" if created else ""
    click.echo(
        f"loaded {summary['rows']:,} rows from {files} file{'s' if files != 1 else ''} into "
        f"{space!r}{new} in {summary['seconds']:.2f} s ({summary['rows_per_second'] or 0:,.0f} "
        f"rows/s); {space!r} holds {summary['space_count']:,} rows"
    )


class Loading:
    """One load in progress: what it has stored, so that a failure can take it back."""

    def __init__(self, client: Client, space: Space, created: bool):
        self.client = client
        self.space = space
        self.created = created
        self.stored = 0
        # the ids stored so far, as an Arrow stream in a temporary file: a load of a
        # hundred million rows can still be undone without holding their ids in memory
        self._journal = tempfile.TemporaryFile()
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None

    def record(self, ids: list[str]) -> None:
        batch = pa.record_batch({"id": pa.array(ids, pa.string())})
        if self._writer is None:
            self._writer = pa.ipc.new_stream(self._journal, batch.schema)
        self._writer.write_batch(batch)
        self.stored += len(ids)

    def recorded(self) -> Iterator[list[str]]:
        """The ids stored so far, a batch at a time."""
        if self._writer is None:
            return
        self._writer.close()
        self._journal.seek(0)
        for batch in pa.ipc.open_stream(self._journal):
            yield batch.column("id").to_pylist()

    def close(self) -> None:
        self._journal.close()

    def load_file(self, plan: Plan, size: int, dim: int | None, bar) -> None:
        """Store every batch of ``plan``'s file, whose embeddings have dimension ``dim``."""
        start = 0
        bar.set_postfix_str(plan.source.path.name, refresh=False)
        batches = plan.source.batches(
            plan.columns, size, text=plan.text_columns, floats=plan.float_columns
        )
        for batch in _read_ahead(batches):
            if batch.num_rows == 0:
                continue
            arguments = batch_arguments(plan, batch, start, dim)
            try:
                self.record(self.space.add(**arguments, progress=False))
            except ChromaError as exc:
                stop = start + batch.num_rows - 1
                raise LoadError(f"{plan.source.path}: rows {start}-{stop}: {exc.detail}") from None
            start += batch.num_rows
            bar.update(batch.num_rows)

    def undo(self, error: BaseException) -> BaseException:
        """Remove what this load stored; returns ``error`` saying so (or what remains)."""
        try:
            if self.created:
                self.client.delete_space(self.space.name)
                done = f"the space {self.space.name!r} this load created was dropped"
            elif self.stored:
                for ids in self.recorded():
                    self.space.delete(ids=ids)
                done = f"the {self.stored:,} rows it had stored were removed"
            else:
                done = "nothing was stored"
        except (ChromaError, OSError) as exc:
            detail = getattr(exc, "detail", str(exc))
            done = f"the {self.stored:,} rows it had stored could NOT be removed ({detail})"
        if isinstance(error, KeyboardInterrupt):
            return LoadInterrupted(f"interrupted; {done}")
        message = getattr(error, "detail", None) or str(error)
        if isinstance(error, LoadError | ChromaError | SourceError):
            return LoadError(f"{message}; {done}")
        if isinstance(error, Exception):
            return LoadError(f"{type(error).__name__}: {message}; {done}")
        return error


class LoadInterrupted(LoadError):
    """Ctrl-C during a load (exit status 130)."""


def _first_dimension(plan: Plan) -> int | None:
    """The dimension of the first embedding of a file whose schema does not tell it, so a
    file of another dimension is refused before anything is stored; None when empty."""
    try:
        for batch in plan.source.batches(plan.embedding, 1, text=plan.text_columns):
            if batch.num_rows:
                return _matrix(plan, batch.slice(0, 1), 0).shape[1]
    except SourceError as exc:
        raise LoadError(str(exc)) from None
    return None


def _existing_space(client: Client, name: str) -> dict | None:
    found = client.spaces()
    match = found[found["name"] == name]
    if match.empty:
        return None
    row = match.iloc[0]
    return {"metric": str(row["metric"]), "dim": None if pd.isna(row["dim"]) else int(row["dim"])}


def _read_ahead(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``batches``, the next one read in a thread while the current one is stored."""
    with ThreadPoolExecutor(1, thread_name_prefix="chroma-load-read") as pool:
        iterator = iter(batches)
        ahead = pool.submit(next, iterator, None)
        while True:
            batch = ahead.result()
            if batch is None:
                return
            ahead = pool.submit(next, iterator, None)
            yield batch
