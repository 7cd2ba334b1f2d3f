"""The public client: ``Client()`` embedded on SQLite, ``Client(url)`` against a server."""

from __future__ import annotations

import json
import os
import sys
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
from tqdm.auto import tqdm

from chroma_client import backup, convert
from chroma_client import labels as labels_io
from chroma_client.errors import ChromaError, ConnectionFailed, InvalidInput, NotFound
from chroma_client.stream import (
    DEFAULT_LINGER,
    DEFAULT_MAX_BATCH_ROWS,
    DEFAULT_MAX_PENDING_ROWS,
    DEFAULT_RETRY_FOR,
    Stream,
)
from chroma_client.transport import (
    DEFAULT_RETRIES,
    DEFAULT_RETRY_BACKOFF,
    Embedded,
    Http,
    Outgoing,
)
from chroma_client.watch import Watch
from chroma_wire.limits import MAX_NEIGHBORS, MAX_QUERIES, MAX_WATCH_SECONDS

DEFAULT_BATCH_ROWS = 50_000


@dataclass(frozen=True)
class SpaceSummary:
    name: str
    metric: str
    dim: int | None
    count: int
    model: dict = field(default_factory=dict)
    created_at: str = ""


_SUMMARY_FIELDS = tuple(SpaceSummary.__dataclass_fields__)


@dataclass(frozen=True)
class Trigger:
    """A recorded retraining trigger and the outcome of each handler that delivered it."""

    id: int
    space: str
    status: str
    count: int
    note: str | None
    selection: dict
    deliveries: dict
    created_at: str
    updated_at: str
    #: how many of its inputs have been labelled since it was recorded (listings only)
    labelled: int | None = None


#: the columns of ``client.triggers()``, the Trigger objects themselves last
TRIGGER_COLUMNS = ["id", "space", "status", "count", "labelled", "strategy", "note",
                   "created_at", "updated_at", "deliveries", "selection", "trigger"]  # fmt: skip


@dataclass(frozen=True)
class Explanation:
    """Why an input scores as it does: its scores and the training inputs nearest to it."""

    id: str
    #: None until ``compute_priorities`` has scored the input (training inputs never are)
    priority: float | None
    #: the components of ``priority`` by name
    components: dict
    #: the k nearest training inputs: rank, id, distance, label, dataset, input_uri, ...
    neighbors: pd.DataFrame
    #: how many of those neighbours carry each label, most first
    label_votes: dict


class Client:
    """Entry point. ``Client()`` runs in this process on ``./chroma_data`` (or ``CHROMA_PATH``);
    ``Client("http://host:8000")`` talks to a Chroma server. Both behave the same.

    A server on this machine receives large requests through shared memory instead of the
    socket; ``shared_memory=False`` (or ``CHROMA_SHARED_MEMORY=0``) keeps them on the socket.

    A request that fails on the way to a server (refused, no reply within ``timeout``
    seconds, connection dropped) is sent again up to ``retries`` times, after
    ``retry_backoff`` seconds and twice as long each time after, when receiving it twice
    cannot do it twice: a request that never left, a read, a batch of ``add`` (each carries
    a key, so the server stores it once). Then :class:`~chroma_client.errors.RetriesExhausted`
    says how many attempts were made."""

    def __init__(
        self,
        url: str | None = None,
        *,
        path: str | os.PathLike | None = None,
        token: str | None = None,
        timeout: float = 300.0,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        shared_memory: bool | None = None,
        retries: int = DEFAULT_RETRIES,
        retry_backoff: float = DEFAULT_RETRY_BACKOFF,
    ):
        url = url or os.environ.get("CHROMA_URL") or None
        self._transport: Embedded | Http
        if url is not None and path is not None:
            raise InvalidInput("give either a server url or a local path, not both")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidInput(f"retries must be an integer of at least 0, got {retries!r:.40}")
        if (
            isinstance(retry_backoff, bool)
            or not isinstance(retry_backoff, int | float)
            or not 0 <= retry_backoff <= 60
        ):
            raise InvalidInput(
                f"retry_backoff must be a number of seconds from 0 to 60, got {retry_backoff!r:.40}"
            )
        if url is not None:
            self._transport = Http(
                url,
                timeout=timeout,
                token=token or os.environ.get("CHROMA_TOKEN"),
                shared_memory=shared_memory,
                retries=retries,
                retry_backoff=float(retry_backoff),
            )
        else:
            self._transport = Embedded(path)
        if not isinstance(batch_rows, int) or batch_rows < 1:
            raise InvalidInput("batch_rows must be a positive integer")
        self.batch_rows = batch_rows
        self._streams: weakref.WeakSet[Stream] = weakref.WeakSet()

    @property
    def location(self) -> str:
        """The server URL or the local data directory."""
        return self._transport.location

    def _call(self, op: str, params: dict | None = None, table: pa.Table | None = None):
        return self._transport.call(op, params or {}, table)

    def close(self) -> None:
        """Close the streams still open (each sends what it holds first), then the
        connection, or the service when it runs in this process."""
        try:
            for stream in list(self._streams):
                stream.close()
        finally:
            self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.location!r})"

    # --- spaces -------------------------------------------------------------
    def space(self, name: str, metric: str = "l2", model: dict | None = None) -> Space:
        """Get or create the model space ``name``."""
        info, _ = self._call("space", {"name": name, "metric": metric, "model": model})
        return Space(self, info["space"]["name"])

    def spaces(self) -> pd.DataFrame:
        """Every space: name, dim, metric, count, model, created_at."""
        info, _ = self._call("spaces")
        frame = pd.DataFrame(info["spaces"], columns=list(_SUMMARY_FIELDS))
        frame["dim"] = frame["dim"].astype("Int64")
        return frame

    def delete_space(self, name: str) -> None:
        """Drop a space with its rows, index, priorities and triggers."""
        self._call("delete_space", {"space": name})

    # --- back-up and restore -------------------------------------------------
    def export_to(
        self,
        path: str | os.PathLike,
        spaces: str | list[str] | None = None,
        *,
        progress: bool | None = None,
        rows_per_file: int = backup.ROWS_PER_FILE,
    ) -> dict:
        """Back up ``spaces`` (a name or a list; default: every space) into the new or empty
        directory ``path``: rows with their embeddings, outputs, catalogue fields and
        metadata, priorities, and triggers with their items, as Parquet files of at most
        ``rows_per_file`` rows, and ``manifest.json`` (format version, Chroma version, time,
        and per space its metric, model, dimension, counts and every file with its row count
        and SHA-256). Returns the manifest.

        Rows are read a page at a time, so memory stays bounded whatever the size; rows
        stored after the export began are left out. ``progress`` shows a progress bar
        (default: on a terminal). If the export fails, the files it wrote are removed."""
        return backup.export_to(
            self._call,
            path,
            spaces,
            batch_rows=self.batch_rows,
            progress=progress,
            rows_per_file=rows_per_file,
        )

    def import_from(
        self,
        path: str | os.PathLike,
        spaces: str | list[str] | None = None,
        *,
        progress: bool | None = None,
    ) -> dict:
        """Restore ``spaces`` (default: all) of the back-up ``export_to`` wrote at ``path``,
        into this client's store, whichever it is: rows keep their ids (and their seqs, so
        stored priorities stay current), priorities and triggers come back verbatim, and a
        trigger keeps its id unless another trigger here holds it.

        Every check runs before anything is written: format version, each file's size,
        SHA-256, row count and columns, the dimension. ``InvalidBackup`` names what is
        wrong; ``Conflict`` is raised if a space of that name exists here. If anything fails
        after writing began, every space this import created is deleted again. Returns
        ``{"spaces", "rows", "priorities", "triggers", "trigger_items",
        "renumbered_triggers"}``, the last mapping space to ``{old id: new id}`` for triggers
        that had to take another id."""
        return backup.import_from(
            self._call, path, spaces, batch_rows=self.batch_rows, progress=progress
        )

    # --- triggers -----------------------------------------------------------
    def triggers(self, space: str | None = None, status: str | None = None) -> pd.DataFrame:
        """The retraining triggers (of ``space``, in ``status``), newest first, one row
        each: id, space, status, count, labelled (how many of its inputs have been
        labelled since), strategy, note, times, deliveries and selection; the
        :class:`Trigger` objects themselves are in the ``trigger`` column."""
        info, _ = self._call("triggers", {"space": space, "status": status})
        found = [Trigger(**t) for t in info["triggers"]]
        rows = [
            {**{name: getattr(t, name) for name in TRIGGER_COLUMNS if hasattr(t, name)},
             "strategy": t.selection.get("strategy"), "trigger": t}
            for t in found
        ]  # fmt: skip
        return pd.DataFrame(rows, columns=TRIGGER_COLUMNS)

    def set_trigger_status(self, trigger_id: int, status: str) -> Trigger:
        """Move a trigger along: pending, acknowledged, done or failed."""
        info, _ = self._call("set_trigger_status", {"trigger_id": trigger_id, "status": status})
        return Trigger(**info["trigger"])

    def trigger_items(self, trigger_id: int) -> pd.DataFrame:
        """The inputs a trigger selected, highest priority first, as selected, with
        ``labelled`` (labelled since: it carries a label now, another than then) and
        ``label_now``. A trigger whose inputs are all labelled by an update or
        ``import_labels`` moves to done by itself."""
        _, table = self._call("trigger_items", {"trigger_id": trigger_id})
        return convert.frame(table)

    def export_label_studio(
        self, trigger_id: int, path: str | os.PathLike, *, data_key: str = "image"
    ) -> int:
        """Write a trigger's inputs to ``path`` as a Label Studio import file (JSON tasks:
        the input URI under ``data_key``, ``chroma_id``, the priority, and the model's
        inference as a prediction), so labelling starts where the model stopped; returns
        how many tasks. Its export comes back with :meth:`Space.import_labels`."""
        tasks = labels_io.label_studio_tasks(self.trigger_items(trigger_id), data_key=data_key)
        Path(path).write_text(json.dumps(tasks, indent=1), encoding="utf-8")
        return len(tasks)

    # --- introspection ------------------------------------------------------
    def plugins(self) -> list[dict]:
        """The loaded plugins and the hooks each implements."""
        return self._call("plugins")[0]["plugins"]

    def algorithms(self) -> pd.DataFrame:
        return pd.DataFrame(
            self._call("algorithms")[0]["algorithms"], columns=["name", "description"]
        )

    def version(self) -> dict:
        return self._call("version")[0]


class Space:
    """One model space: the embeddings of one model (and layer, version) in one vector space."""

    def __init__(self, client: Client, name: str):
        self.client = client
        self.name = name

    def __repr__(self) -> str:
        return f"Space({self.name!r})"

    def _call(self, op: str, params: dict | None = None, table: pa.Table | None = None):
        return self.client._call(op, {"space": self.name, **(params or {})}, table)

    def info(self) -> SpaceSummary:
        space = self._call("space_info")[0]["space"]
        return SpaceSummary(**{name: space[name] for name in _SUMMARY_FIELDS if name in space})

    def status(self) -> dict:
        """The space (name, dim, metric, count) and its index: rows ``indexed`` and rows
        ``pending`` (stored, searched exactly until the index catches up)."""
        return self._call("status")[0]

    def wait_for_index(self, timeout: float | None = None, interval: float = 0.1) -> dict:
        """Block until the index has caught up with every stored row; returns the status.

        Queries never need this (rows are findable once added); scripts timing the index
        do. Raises ``TimeoutError`` after ``timeout`` seconds."""
        return _poll(
            self.status,
            lambda status: status.get("index", {}).get("pending", 0) == 0,
            lambda status: (
                f"the index of {self.name!r} still has "
                f"{status['index']['pending']} rows pending after {timeout} s"
            ),
            timeout,
            interval,
        )

    @property
    def dim(self) -> int | None:
        return self.info().dim

    @property
    def metric(self) -> str:
        return self.info().metric

    # --- rows ---------------------------------------------------------------
    def add(
        self,
        embeddings,
        *,
        dataset: str = "default",
        context: str = "training",
        input_uris=None,
        inferences=None,
        outputs=None,
        labels=None,
        metadata=None,
        ids=None,
        progress: bool | None = None,
    ) -> list[str]:
        """Store embeddings with their catalogue fields; returns their ids. ``dataset``
        names where the inputs come from (``"default"`` when not given).

        Per-row fields take a sequence (one value per row) or one value for all rows.
        Inputs are checked whole before anything is sent; large inputs go in batches of
        ``client.batch_rows``, each stored all or nothing (a failing batch raises, saying
        how many rows earlier batches stored). ``progress`` shows a progress bar (default:
        on a terminal, when there is more than one batch).
        """
        rows = convert.check_rows(
            embeddings,
            dataset=dataset,
            context=context,
            input_uris=input_uris,
            inferences=inferences,
            outputs=outputs,
            labels=labels,
            metadata=metadata,
            ids=ids,
        )
        return self._send_batches("add", rows, progress)

    def upsert(
        self,
        embeddings,
        *,
        ids,
        dataset: str = "default",
        context: str = "training",
        input_uris=None,
        inferences=None,
        outputs=None,
        labels=None,
        metadata=None,
        progress: bool | None = None,
    ) -> list[str]:
        """Store embeddings with their catalogue fields under ``ids``: an id already stored
        is replaced whole (embedding included), the others are added; returns the ids. The
        arguments are those of :meth:`add`, ``ids`` required. A replaced input loses its
        priority (``compute_priorities(only_new=True)`` scores it again); triggers keep the
        priority it had when they selected it. Batches as in :meth:`add`, each all or
        nothing."""
        if ids is None:
            raise InvalidInput("upsert needs ids: the inputs to add or replace")
        rows = convert.check_rows(
            embeddings,
            dataset=dataset,
            context=context,
            input_uris=input_uris,
            inferences=inferences,
            outputs=outputs,
            labels=labels,
            metadata=metadata,
            ids=ids,
        )
        return self._send_batches("upsert", rows, progress)

    def update(
        self,
        ids,
        *,
        labels=None,
        inferences=None,
        outputs=None,
        metadata=None,
        context: str | None = None,
        dataset=None,
        input_uris=None,
        progress: bool | None = None,
    ) -> list[str]:
        """Change fields of stored inputs by id, keeping their embeddings: each field given
        (one value for all, or one per id) is set, a field left at None keeps its values;
        ``None`` inside a sequence clears that input's value (``labels=[None, "cat"]``).
        Every id must be stored: otherwise :class:`~chroma_client.errors.NotFound` names
        the missing ones and nothing changes. Moving labelled production inputs into
        training is ``update(ids, labels=..., context="training")``. An updated input is
        stored anew: it loses its priority (scored again by
        ``compute_priorities(only_new=True)``), and a change to the training inputs makes
        every stored priority stale, as ``priority_status()`` says."""
        changes = convert.check_changes(
            ids,
            dataset=dataset,
            context=context,
            input_uris=input_uris,
            inferences=inferences,
            outputs=outputs,
            labels=labels,
            metadata=metadata,
        )
        return self._send_batches("update", changes, progress)

    def import_labels(
        self,
        source,
        *,
        format: str | None = None,  # noqa: A002 - the word users know
        into_training: bool = False,
        id_column: str = "id",
        label_column: str = "label",
        id_field: str = labels_io.ID_FIELD,
        progress: bool | None = None,
    ) -> dict:
        """Write labels back from a labelling tool: ``source`` is a DataFrame or a file, a
        CSV or Parquet table of id and label (``id_column``, ``label_column``), a Label
        Studio JSON export, or a CVAT for images 1.1 XML export (its image names matched to
        ids or input URIs); ``format`` is told from the file name unless given
        (:mod:`chroma_client.labels`). With ``into_training`` the labelled inputs also move
        into training, in the same step. Every input must be stored, else ``NotFound``
        names those that are not and nothing changes. Returns how many were labelled."""
        pairs, key = labels_io.read_labels(
            source, format=format, id_column=id_column, label_column=label_column,
            id_field=id_field,
        )  # fmt: skip
        if pairs.empty:
            return {"labelled": 0, "into_training": into_training}
        ids = pairs[key].tolist()
        if key == "name":
            ids = self._ids_of_names(ids)
        self.update(
            ids,
            labels=pairs["label"].tolist(),
            context="training" if into_training else None,
            progress=progress,
        )
        return {"labelled": len(ids), "into_training": into_training}

    def _ids_of_names(self, names: list[str]) -> list[str]:
        """The id of each name: an input whose id or input URI it is."""
        found = self.get(where={"$or": [{"id": {"$in": names}}, {"input_uri": {"$in": names}}]})
        by_name = dict(zip(found["input_uri"], found["id"], strict=True))
        by_name |= {one: one for one in found["id"]}
        missing = [name for name in names if name not in by_name]
        if missing:
            raise NotFound(
                f"{len(missing)} name(s) match no input's id or input_uri in space "
                f"{self.name!r}, nothing was labelled: {', '.join(map(repr, missing[:5]))}"
            )
        return [by_name[name] for name in names]

    def _send_batches(self, op: str, rows, progress: bool | None) -> list[str]:
        spans = list(rows.spans(self.client.batch_rows))
        if progress is None:
            progress = len(spans) > 1 and sys.stderr.isatty()
        with tqdm(
            total=len(rows),
            unit=" rows",
            unit_scale=True,
            disable=not progress,
            desc=f"{op} to {self.name}" if op == "add" else f"{op} {self.name}",
        ) as bar:
            return self._add_batches(rows, spans, bar, op)

    def _add_batches(self, rows, spans: list[tuple[int, int]], bar, op: str = "add") -> list[str]:
        """Send the spans of ``rows`` one after the other, converting and encoding the next
        while one is on its way, so at most two batches are held at a time; the ids come
        back in input order."""
        transport = self.client._transport

        def prepare(start: int, stop: int) -> Outgoing:
            return transport.prepare(op, {"space": self.name}, rows.table(start, stop))

        out: list[str] = []
        with ThreadPoolExecutor(1, thread_name_prefix="chroma-add") as pool:
            ready = pool.submit(prepare, *spans[0])
            try:
                for i, (start, stop) in enumerate(spans):
                    outgoing = ready.result()
                    if i + 1 < len(spans):
                        ready = pool.submit(prepare, *spans[i + 1])
                    try:
                        _, table = transport.send(outgoing)
                    except ChromaError as exc:
                        raise _stored_before(exc, len(out), start) from None
                    assert table is not None
                    out.extend(table.column("id").to_pylist())
                    bar.update(stop - start)
            finally:
                if not ready.cancel() and ready.exception() is None:
                    ready.result().discard()
        return out

    def stream(
        self,
        *,
        max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS,
        linger: float = DEFAULT_LINGER,
        max_pending_rows: int = DEFAULT_MAX_PENDING_ROWS,
        retry_for: float = DEFAULT_RETRY_FOR,
    ) -> Stream:
        """A :class:`~chroma_client.stream.Stream` into this space for production traffic:
        any number of threads call ``stream.add(...)`` (the arguments of :meth:`add`) with
        a few rows each; it returns a future of their ids at once, and one sender stores
        what has queued as batches of up to ``max_batch_rows`` rows, waiting at most
        ``linger`` seconds for more. An add blocks while ``max_pending_rows`` rows wait;
        a batch the server cannot be reached for is sent again, under one key so it is
        stored once, for ``retry_for`` seconds. ``stream.flush()`` waits for everything
        added before it; ``close()`` (or leaving a ``with`` block, or closing the client)
        sends what is left."""
        stream = Stream(
            self,
            max_batch_rows=max_batch_rows,
            linger=linger,
            max_pending_rows=max_pending_rows,
            retry_for=retry_for,
        )
        self.client._streams.add(stream)
        return stream

    def get(
        self,
        ids=None,
        where: dict | None = None,
        limit: int | None = None,
        offset: int = 0,
        include_embeddings: bool = False,
    ) -> pd.DataFrame:
        """Rows as a DataFrame: id, dataset, context, input_uri, inference, label, metadata
        (dicts), and with ``include_embeddings`` an ``embedding`` column of float32 arrays
        and an ``output`` column."""
        _, table = self._call(
            "get",
            {
                "ids": _id_list(ids),
                "where": where,
                "limit": limit,
                "offset": offset,
                "include_embeddings": include_embeddings,
            },
        )
        return _rows_frame(table)

    def embeddings(self, ids=None, where: dict | None = None) -> tuple[list[str], np.ndarray]:
        """``(ids, matrix)``: the stored embeddings as one float32 (n, d) array."""
        _, table = self._call(
            "get", {"ids": _id_list(ids), "where": where, "include_embeddings": True}
        )
        column = table.column("embedding").combine_chunks()
        dim = column.type.list_size if pa.types.is_fixed_size_list(column.type) else 0
        matrix = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), dim)
        return table.column("id").to_pylist(), matrix

    def count(self, where: dict | None = None) -> int:
        return self._call("count", {"where": where})[0]["count"]

    def delete(self, ids=None, where: dict | None = None) -> int:
        """Delete rows by id and/or filter; returns how many went."""
        return self._call("delete", {"ids": _id_list(ids), "where": where})[0]["deleted"]

    # --- analysis -----------------------------------------------------------
    def nearest_neighbors(
        self, queries=None, ids=None, k: int = 10, where: dict | None = None
    ) -> pd.DataFrame:
        """The k nearest stored inputs of each query vector, or of each stored id (itself
        excluded): query, rank, id, distance, input_uri, dataset, context, inference, label.
        ``frame.attrs["meta"]`` says how the search was answered."""
        table = None if queries is None else convert.queries_table(queries)
        listed = _id_list(ids)
        # a call returns at most MAX_NEIGHBORS neighbours: more go in several calls (more
        # queries than a call takes, or a bad k, go in one, for the server to refuse)
        n = table.num_rows if table is not None else len(listed or ())
        per_call = max(1, MAX_NEIGHBORS // k) if isinstance(k, int) and k > 0 else n
        if n > MAX_QUERIES:
            per_call = n
        frames: list[pd.DataFrame] = []
        meta: dict = {}
        for start in range(0, max(n, 1), per_call):
            part = None if table is None else table.slice(start, per_call)
            some = None if listed is None else listed[start : start + per_call]
            info, out = self._call("nearest_neighbors", {"ids": some, "k": k, "where": where}, part)
            page = convert.frame(out)
            if table is not None and start:
                page["query"] += start
            frames.append(page)
            meta = meta or info.get("meta", {})
        frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        frame.attrs["meta"] = {**meta, "calls": len(frames)} if len(frames) > 1 else meta
        return frame

    def run(self, algorithm: str, **params) -> pd.DataFrame:
        """Run any installed algorithm plugin by name; ``frame.attrs["meta"]`` is its summary."""
        info, out = self._call("run", {"algorithm": algorithm, "params": params})
        frame = convert.frame(out)
        frame.attrs["meta"] = info.get("meta", {})
        return frame

    def compute_priorities(self, **params) -> dict:
        """Score every non-training input against the training inputs; returns a summary.

        Parameters go to the ``priority`` algorithm (see docs/priority.md), e.g. ``k=10``.
        ``only_new=True`` scores only the inputs without a score, keeping the others as
        they are, when every stored score was computed against the current training set;
        when the training set has changed since, everything is scored again.
        ``background=True`` returns at once with ``{"job": ...}``; the computation runs in
        the service and ``priority_status()["job"]`` shows its phase and outcome (see
        ``wait_for_priorities``)."""
        return self.run("priority", **params).attrs["meta"]

    def score_on_arrival(self, enabled: bool = True, **params) -> dict:
        """Turn scoring on arrival on or off. On, every non-training input stored from now
        on gets its priority within moments of being stored, with no call, and inputs
        without a score are caught up; ``k`` and ``shrinkage`` are as for
        :meth:`compute_priorities`. The setting is kept in the store, so it holds for
        every server and across restarts. Returns the state ``priority_status()["online"]``
        shows: the settings, rows waiting, rows scored, ``building`` while a model is being
        built, and the model of the training set (rebuilt after the background refresh
        once labelled training inputs change)."""
        return self.run("priority_online", enabled=enabled, **params).attrs["meta"]["online"]

    def watch(
        self,
        *,
        min_priority: float | None = None,
        where: dict | None = None,
        after: str | None = None,
        wait: float = 10.0,
        timeout: float | None = None,
        retry_for: float = 60.0,
    ) -> Watch:
        """Follow this space live: iterate over the returned :class:`Watch` for new inputs
        with their scores (at least ``min_priority``, matching ``where``; training inputs
        never) and new triggers (by a call or a rule), as :class:`Watched` events.

        Inputs show in the order they were stored, each once it is scored (with
        :meth:`score_on_arrival`, within moments). ``after`` resumes after an event's
        ``position`` (None: from now), missing nothing and repeating nothing. Each
        request waits up to ``wait`` seconds (at most 30) for an event; iteration ends
        after ``timeout`` seconds (None: never). A server out of reach is asked again for
        up to ``retry_for`` seconds in a row."""
        if not isinstance(wait, int | float) or not 0 <= wait <= MAX_WATCH_SECONDS:
            raise InvalidInput(f"wait is seconds from 0 to {MAX_WATCH_SECONDS:g}, not {wait!r}")
        return Watch(
            self,
            after=after,
            min_priority=min_priority,
            where=where,
            wait=wait,
            timeout=timeout,
            retry_for=retry_for,
            trigger=lambda raw: Trigger(**raw),
        )

    # --- trigger rules --------------------------------------------------------
    def add_trigger_rule(
        self,
        name: str,
        when: str,
        n: int,
        *,
        min_priority: float | None = None,
        where: dict | None = None,
        dataset: str | None = None,
        strategy: str = "top_priority",
        every: float | None = None,
        note: str | None = None,
    ) -> dict:
        """Keep a rule that records a retraining trigger by itself as data arrives; the
        trigger handlers deliver it (webhook, manifest) as for :meth:`trigger_retraining`.

        - ``when="priority"``: as soon as ``n`` scored inputs matching ``where`` reach
          ``min_priority``, a trigger takes ``n`` of them (with scoring on arrival, new
          inputs are scored as they land);
        - ``when="drift"``: when the ``drift`` algorithm flags ``dataset``, a trigger takes
          ``n`` of its inputs, at most once every ``every`` seconds (default a day);
        - ``when="schedule"``: every ``every`` seconds, a trigger takes ``n`` inputs
          (``strategy="diverse"`` spreads them over the space).

        A rule never takes an input one of its earlier triggers holds, and fires once for
        what it sees: its record is its triggers in the store, so a restart does not fire
        it again. The rule is kept in the store (every server sees it); returns it."""
        params = {
            "action": "add",
            "name": name,
            "when": when,
            "n": n,
            "min_priority": min_priority,
            "where": where,
            "dataset": dataset,
            "strategy": strategy,
            "every": every,
            "note": note,
        }
        return self.run("trigger_rules", **params).attrs["meta"]["rule"]

    def trigger_rules(self) -> pd.DataFrame:
        """This space's trigger rules, one row each, with what each has done: ``fired``
        (triggers recorded), ``last_trigger``, ``last_fired_at``, ``checked_at`` and
        ``last_error`` (why the last check could not select, e.g. no scored inputs)."""
        return self.run("trigger_rules")

    def remove_trigger_rule(self, name: str) -> dict:
        """Drop the trigger rule ``name``; the triggers it recorded stay. Returns the rule."""
        return self.run("trigger_rules", action="remove", name=name).attrs["meta"]["removed"]

    def wait_for_priorities(self, timeout: float | None = None, interval: float = 0.2) -> dict:
        """Block until no background priority computation of this space is running;
        returns ``priority_status()``. Raises ``TimeoutError`` after ``timeout`` seconds."""
        return _poll(
            self.priority_status,
            lambda status: (status.get("job") or {}).get("state") != "running",
            lambda status: (
                f"priorities of {self.name!r} still computing after {timeout} s "
                f"(phase {status['job'].get('phase')})"
            ),
            timeout,
            interval,
        )

    def priority_status(self) -> dict:
        """Whether the stored priorities are current: ``scored``, ``unscored`` (non-training
        inputs without a score), ``stale`` (scores computed against a training set that has
        changed since), the current ``training_version``, and ``job``: the last background
        computation (state running/done/failed, phase, counts, error) or None."""
        return self.run("priority_status").attrs["meta"]

    def priorities(
        self, n: int | None = 100, where: dict | None = None, min_priority: float | None = None
    ) -> pd.DataFrame:
        """Scored inputs, highest priority first, one column per component score."""
        _, table = self._call("priorities", {"n": n, "where": where, "min_priority": min_priority})
        return _priorities_frame(table)

    def label_issues(
        self,
        k: int = 10,
        where: dict | None = None,
        n: int | None = None,
        only_issues: bool = True,
        **params,
    ) -> pd.DataFrame:
        """The labelled training inputs whose label is likely wrong (``is_issue``), ranked
        by how likely (highest ``issue_score`` first); ``only_issues=False`` ranks every
        labelled training input. With ``suggested_label``, ``is_issue``, the voting
        ``neighbors`` and each signal's p(given label): ``vote_quality`` (the neighbours)
        and ``probe_quality`` (a linear probe fitted out of fold); ``frame.attrs["meta"]``
        has counts, per-class thresholds and the weight the two were mixed with. Other
        parameters (``weighting``, ``exclude_duplicates``, ``probe=False`` for the votes
        alone) go to the ``label_quality`` algorithm (docs/priority.md, "Label quality")."""
        return self.run("label_quality", k=k, where=where, n=n, only_issues=only_issues, **params)

    def drift(self, **params) -> pd.DataFrame:
        """How far each non-training dataset's embeddings moved from training, overall and
        per class: MMD with a permutation p-value, mean shift, out-of-distribution rate and
        a ``drifted`` flag. Parameters go to the ``drift`` algorithm
        (plugins/algo_drift/README.md), e.g. ``where={"dataset": "week_32"}``,
        ``alpha=0.01``; ``frame.attrs["meta"]`` lists skipped classes and the settings."""
        return self.run("drift", **params)

    def duplicates(
        self,
        threshold: float | None = None,
        *,
        ratio: float | None = None,
        k: int = 5,
        where: dict | None = None,
        kinds: list[str] | None = None,
        n: int | None = None,
    ) -> pd.DataFrame:
        """Pairs of near-duplicate rows (close embeddings or the same input_uri), leakage
        first: a non-training row duplicated in training. Without ``threshold`` it is
        calibrated as ``ratio`` (0.1) times the training rows' median nearest-neighbour
        distance; ``frame.attrs["meta"]`` holds the threshold used and the counts per kind
        (plugins/algo_duplicates/README.md)."""
        params: dict = {"threshold": threshold, "ratio": ratio, "k": k, "where": where}
        params |= {"kinds": kinds, "n": n}
        return self.run("duplicates", **{key: v for key, v in params.items() if v is not None})

    def explain(self, id: str, k: int = 10) -> Explanation:
        """The scores of input ``id`` and the ``k`` nearest training inputs behind them,
        with their labels (itself excluded when it is a training input)."""
        neighbors = self.nearest_neighbors(ids=[id], k=k, where={"context": "training"})
        neighbors = neighbors.drop(columns=["query"]).reset_index(drop=True)
        scored = self.priorities(n=1, where={"id": id})
        priority, components = None, {}
        if len(scored):
            row = scored.iloc[0]
            priority = float(row["priority"])
            skip = {"id", "priority", "computed_at", *neighbors.columns}
            components = {
                name: (None if pd.isna(value) else float(value))
                for name, value in row.items()
                if name not in skip and isinstance(value, int | float)
            }
        votes = neighbors["label"].value_counts(dropna=True)
        return Explanation(
            id, priority, components, neighbors, {str(k): int(v) for k, v in votes.items()}
        )

    def trigger_retraining(
        self,
        n: int | None = None,
        min_priority: float | None = None,
        where: dict | None = None,
        note: str | None = None,
        strategy: str = "top_priority",
        duplicate_radius: float | None = None,
    ) -> Trigger:
        """Record a retraining trigger holding scored inputs matching ``where``; handlers
        deliver it.

        ``strategy="top_priority"`` takes the top ``n`` (and/or all above ``min_priority``).
        ``strategy="diverse"`` spends a budget of ``n`` on high priorities spread over the
        space: it never takes two inputs closer than ``duplicate_radius`` (default: a
        quarter of the typical spacing of the candidates), so a labelling budget is not
        spent on copies of one hard case. ``trigger.selection`` records the strategy and
        the duplicates it skipped."""
        info, _ = self._call(
            "trigger_retraining",
            {
                "n": n,
                "min_priority": min_priority,
                "where": where,
                "note": note,
                "strategy": strategy,
                "duplicate_radius": duplicate_radius,
            },
        )
        return Trigger(**info["trigger"])


def _poll(read, done, late, timeout: float | None, interval: float) -> dict:
    """``read()`` every ``interval`` seconds until ``done`` of it; ``TimeoutError`` with the
    message ``late`` gives of the last reading once ``timeout`` seconds have passed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        status = read()
        if done(status):
            return status
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(late(status))
        time.sleep(interval)


def _stored_before(error: ChromaError, stored: int, start: int) -> ChromaError:
    """``error`` of the batch from row ``start``, saying how many rows earlier batches stored."""
    if stored == 0:
        return error
    rest = "this batch and the rest were not"
    if isinstance(error, ConnectionFailed):
        # the server may have stored a batch whose reply never came
        rest = "this batch may have been (no reply came), the rest were not"
    told = type(error)(
        f"{error.detail} (in the batch from row {start}; the {stored} rows before it were "
        f"stored, {rest})"
    )
    told.__dict__.update({k: v for k, v in vars(error).items() if k != "detail"})
    return told


def _id_list(ids):
    if ids is None:
        return None
    if isinstance(ids, str):
        return [ids]
    if isinstance(ids, pd.Series | pd.Index | np.ndarray):
        return [str(i) for i in ids.tolist()]
    if isinstance(ids, pa.Array | pa.ChunkedArray):
        return ids.to_pylist()
    try:
        return list(ids)
    except TypeError:
        raise InvalidInput(f"ids must be a list of strings, got {type(ids).__name__}") from None


def _rows_frame(table: pa.Table) -> pd.DataFrame:
    embedding: np.ndarray | None = None
    output: list = []
    if "embedding" in table.column_names:
        column = table.column("embedding").combine_chunks()
        dim = column.type.list_size
        embedding = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), dim)
        output = table.column("output").to_pylist()
        table = table.drop_columns(["embedding", "output"])
    metadata = table.column("metadata").to_pylist()
    frame = convert.frame(table.drop_columns(["metadata"]))
    frame["metadata"] = [json.loads(m) if m else {} for m in metadata]
    if embedding is not None:
        frame["embedding"] = list(embedding)
        frame["output"] = [None if o is None else np.asarray(o, np.float32) for o in output]
    return frame


def _components(texts: pa.ChunkedArray) -> pd.DataFrame:
    """A column per key of the JSON objects ``texts`` (one per row, null for none), parsed
    by Arrow in one pass: a million scores' components as columns, not a million dicts."""
    lines = pc.binary_join_element_wise(
        pc.fill_null(texts.cast(pa.string()), "{}"), pa.scalar(""), "\n"
    ).combine_chunks()
    if len(lines) == 0:
        return pd.DataFrame()
    offsets = lines.buffers()[1]
    first, last = np.frombuffer(offsets, dtype=np.int32)[[lines.offset, lines.offset + len(lines)]]
    body = lines.buffers()[2][first:last]
    try:
        parsed = pa_json.read_json(
            pa.BufferReader(body),
            read_options=pa_json.ReadOptions(block_size=max(len(body) + 1, 1 << 20)),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # values whose types change from row to row: one object at a time
        objects = [json.loads(text) if text else {} for text in texts.to_pylist()]
        return pd.DataFrame.from_records(objects)
    return parsed.to_pandas()


def _priorities_frame(table: pa.Table) -> pd.DataFrame:
    texts = table.column("components")
    frame = convert.frame(table.drop_columns(["components"]))
    components = _components(texts)
    components.index = frame.index
    columns = ["id", "priority", *components.columns]
    rest = [c for c in frame.columns if c not in columns]
    return pd.concat([frame, components], axis=1)[columns + rest]
