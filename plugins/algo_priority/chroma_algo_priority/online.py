"""Scoring on arrival: with a space's online scoring on, every non-training row stored gets
its priority as it lands, with no call from the user.

The model a full computation builds is kept in memory (:class:`Model`): the labelled
training rows' seqs and classes, an HNSW graph of their vectors (hnswlib, the same metric
and distances as the service's search), the Mahalanobis model, and the training rows' own
neighbour distances and Mahalanobis distances to rank new rows against. It is built once
from the store (the vectors read once, into the graph). New rows wait in a bounded queue
per space; one thread per service takes up to ``BATCH_ROWS`` at a time, finds their
neighbours among the labelled training rows in the model's own graph (an unfiltered
search of exactly those rows, where the space's index would have to filter every other
row out), scores them as a full computation would, and stores the scores with
:meth:`~chroma_core.store.AddPriorities.add_priorities`, which never overwrites a score.
The components carry the training set's version, so ``priority_status`` counts them as
current.

What survives a restart is in the store: the setting (``SpaceSettings``, so every server
of the store sees it) and the scores. Rows stored but not yet scored when a server stopped,
or that overflowed the queue, are found again by a catch-up that pages through the space
for rows without a score: when scoring is turned on, when this service first meets the
space, and after every full computation (whose scores replace all others at once).

New labelled training rows make the model stale. It keeps scoring with the old one until
the background refresh (``priority_refresh_seconds`` after the last of them) has recomputed
every score, and is rebuilt after it; with the refresh off, once the training rows have
been quiet for ``MIN_QUIET_SECONDS``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

import hnswlib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from chroma_algo_priority.outputs import uncertainty
from chroma_algo_priority.scores import (
    Mahalanobis,
    PriorityParams,
    backing_inputs,
    class_evidence,
    combine,
    contributions,
    encode_inferences,
    evidence,
    filled_distances,
    fit_probe,
    probe_evidence,
    training_version,
    vote_weight,
)
from chroma_algo_priority.stored import COMPONENTS, scores_table
from chroma_core import linear_probe
from chroma_core.filters import parse
from chroma_core.neighbor_search import Workers
from chroma_core.schema import embeddings_of
from chroma_core.seqs import locate
from chroma_core.store import AddPriorities, PagedBackup, SpaceSettings
from chroma_wire.errors import ChromaError, InvalidInput, NotFound
from chroma_wire.types import SpaceInfo

log = logging.getLogger("chroma.priority.online")

#: the space setting that turns scoring on arrival on: JSON ``{"k", "shrinkage", "since"}``
SETTING = "priority_online"
LABELLED_TRAINING = {"$and": [{"context": "training"}, {"label": {"$ne": None}}]}
#: rows scored in one pass; each pass is one neighbour search and one write
BATCH_ROWS = 20_000
#: rows a space may hold waiting in memory; beyond, they are found again by a catch-up
MAX_QUEUED_ROWS = 200_000
#: rows read a page at a time by a catch-up
PAGE_ROWS = 20_000
#: how long this service trusts what it last read of a space's setting (another server
#: may change it)
SETTING_SECONDS = 2.0
#: quiet seconds after labelled training rows before the model is rebuilt, at the least
MIN_QUIET_SECONDS = 30.0
#: a failing space is tried again after this long, doubling up to ``MAX_BACKOFF_SECONDS``
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 60.0
#: the model's graph of labelled training rows: links per node, the breadth of its
#: construction, and of a search at the least (``SEARCH_EF_PER_K`` times k above that)
GRAPH_M = 16
GRAPH_EF_CONSTRUCTION = 100
GRAPH_MIN_EF = 64
SEARCH_EF_PER_K = 8
_ADDED_SINCE = -1  # a neighbour labelled after the model was built: counted as no class


@dataclass
class Model:
    """What scoring a new row needs of the training set, without its vectors."""

    params: PriorityParams
    #: labelled training seqs, ascending, and the class code of each
    seqs: np.ndarray
    codes: np.ndarray
    classes: np.ndarray
    mahalanobis: Mahalanobis
    #: sorted: the training rows' own mean neighbour distances and Mahalanobis distances
    reference_mean: np.ndarray
    reference_mahalanobis: np.ndarray
    version: str
    #: the labelled training rows' vectors, labelled by their position in ``seqs``
    graph: Graph
    #: the linear probe of the labelled training rows, and the neighbours' share of the
    #: backing it is mixed with
    probe: linear_probe.Probe
    vote_weight: float
    built_at: float = field(default_factory=time.time)

    @property
    def k(self) -> int:
        return min(self.params.k, len(self.seqs) - 1)

    def neighbors(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The seqs and distances of the ``k`` nearest labelled training rows of each of
        ``vectors``, as the service's search measures them."""
        positions, distances = self.graph.search(vectors, k)
        return self.seqs[positions], distances


class Graph:
    """An HNSW graph of vectors labelled 0..n-1, searched as the service's k-NN measures
    distance (L2 as its square root; cosine and inner product as hnswlib gives them)."""

    def __init__(self, vectors: np.ndarray, metric: str, threads: int):
        self.metric = metric
        self.threads = threads
        self.index = hnswlib.Index(space=metric, dim=vectors.shape[1])
        self.index.init_index(
            max_elements=max(1, len(vectors)), ef_construction=GRAPH_EF_CONSTRUCTION, M=GRAPH_M
        )
        self.index.add_items(vectors, np.arange(len(vectors)), num_threads=threads)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self.index.set_ef(max(GRAPH_MIN_EF, SEARCH_EF_PER_K * k))
        labels, distances = self.index.knn_query(vectors, k=k, num_threads=self.threads)
        distances = distances.astype(np.float32, copy=False)
        if self.metric == "l2":
            distances = np.sqrt(np.maximum(distances, 0))
        return labels.astype(np.int64), distances


@dataclass
class _Waiting:
    """Rows of one add, queued to be scored."""

    ids: list
    vectors: np.ndarray
    inferences: np.ndarray
    outputs: pa.ChunkedArray | None
    first_seq: int
    queued_at: float = field(default_factory=time.monotonic)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class _Space:
    """One online space in this service: its settings, model, and the rows waiting."""

    params: PriorityParams
    #: the ``space_id`` of the space this state was made for: a space made again under a
    #: deleted one's name gets state of its own, and none of the old one's rows
    space_id: int = 0
    queue: deque[_Waiting] = field(default_factory=deque)
    queued: int = 0
    #: the rows a catch-up still has to read: those above this seq (0: every row, as when
    #: the space is met; the first seq the queue dropped, when only those are missing);
    #: None when there is none to do
    catch_up_after: int | None = 0
    model: Model | None = None
    #: when the model being built now started, or None
    building_since: float | None = None
    stale_since: float | None = None  # when labelled training rows last arrived
    scored: int = 0
    #: rows left to a catch-up when the queue was full
    dropped: int = 0
    failures: int = 0
    last_error: str | None = None
    retry_at: float = 0.0
    backoff: float = FIRST_BACKOFF_SECONDS


class Online:
    """The online spaces of one service and the thread that scores their new rows."""

    def __init__(self, context, refresh_seconds: float):
        self.context = context
        self.quiet_seconds = max(refresh_seconds, MIN_QUIET_SECONDS)
        self._spaces: dict[str, _Space] = {}
        self._settings: dict[tuple[str, int], tuple[float, PriorityParams | None]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._thread: threading.Thread | None = None

    # --- turning it on and off ----------------------------------------------------------
    def enable(self, space: SpaceInfo, params: PriorityParams) -> dict:
        SpaceSettings.of(self.context.store)
        AddPriorities.of(self.context.store)
        setting = {"k": params.k, "shrinkage": params.shrinkage,
                   "since": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
        self.context.store.set_space_setting(space.name, SETTING, json.dumps(setting))
        with self._wake:
            self._settings.pop((space.name, space.space_id), None)
            _catch_up_after(self._entry(space, params), 0)
            self._wake.notify_all()
        return setting

    def disable(self, space: SpaceInfo) -> None:
        SpaceSettings.of(self.context.store).set_space_setting(space.name, SETTING, None)
        with self._wake:
            self._settings.pop((space.name, space.space_id), None)
            self._spaces.pop(space.name, None)

    def params(self, space: SpaceInfo) -> PriorityParams | None:
        """The space's online settings as the store has them (read at most every
        ``SETTING_SECONDS``), or None when it is not scored on arrival."""
        store = self.context.store
        if not isinstance(store, SpaceSettings):
            return None
        key = (space.name, space.space_id)
        with self._lock:
            cached = self._settings.get(key)
        if cached is not None and time.monotonic() - cached[0] < SETTING_SECONDS:
            return cached[1]
        try:
            text = store.space_settings(space.name).get(SETTING)
        except NotFound:
            text = None
        params = None
        if text is not None:
            value = json.loads(text)
            params = PriorityParams(k=int(value["k"]), shrinkage=float(value["shrinkage"]))
        with self._lock:
            self._settings[key] = (time.monotonic(), params)
        return params

    # --- rows arriving ----------------------------------------------------------------
    def rows_added(self, space: SpaceInfo, seqs: np.ndarray, rows: pa.Table) -> None:
        """Queue the non-training rows of ``rows`` when ``space`` is scored on arrival;
        note labelled training rows, which make the model stale."""
        params = self.params(space)
        if params is None:
            return
        context = rows.column("context")
        training = pc.equal(context, "training").to_numpy(zero_copy_only=False)
        if (
            "label" in rows.column_names
            and (training & rows.column("label").is_valid().to_numpy(zero_copy_only=False)).any()
        ):
            with self._wake:
                entry = self._entry(space, params)
                entry.stale_since = time.monotonic()
        if training.all():
            return
        others = rows.filter(pa.array(~training))
        item = _Waiting(
            others.column("id").to_pylist(),
            embeddings_of(others),
            np.asarray(others.column("inference").to_pylist(), dtype=object),
            others.column("output") if "output" in others.column_names else None,
            int(np.asarray(seqs)[~training].min()),
        )
        with self._wake:
            entry = self._entry(space, params)
            if entry.queued + len(item) > MAX_QUEUED_ROWS:
                # the rows are stored: a catch-up reads them back from the first one dropped
                # instead of memory holding them
                first = min(waiting.first_seq for waiting in [item, *entry.queue])
                entry.dropped += entry.queued + len(item)
                entry.queue.clear()
                entry.queued = 0
                _catch_up_after(entry, first - 1)
            else:
                entry.queue.append(item)
                entry.queued += len(item)
            self._start()
            self._wake.notify_all()

    def full_computation_done(self, space: str) -> None:
        """A full computation replaced every score: rows scored here meanwhile may have been
        left out, and the model is rebuilt from the training set it read."""
        with self._wake:
            entry = self._spaces.get(space)
            if entry is not None:
                _catch_up_after(entry, 0)
                entry.model = None
                entry.stale_since = None
                self._wake.notify_all()

    def forget(self, space: SpaceInfo) -> None:
        with self._wake:
            entry = self._spaces.get(space.name)
            if entry is not None and entry.space_id == space.space_id:
                del self._spaces[space.name]
            self._settings.pop((space.name, space.space_id), None)

    def _entry(self, space: SpaceInfo, params: PriorityParams) -> _Space:
        """The space's state, made (to catch up first) when this service meets it, its
        settings changed or it is another space than the one of that name met before; the
        scoring thread is started and woken. Called with the lock."""
        entry = self._spaces.get(space.name)
        if entry is None or entry.params != params or entry.space_id != space.space_id:
            entry = self._spaces[space.name] = _Space(params, space.space_id)
            self._start()
            self._wake.notify_all()
        return entry

    def status(self, space: SpaceInfo) -> dict | None:
        params = self.params(space)
        if params is None:
            return None
        with self._wake:
            # a space this service had not met yet: its rows without a score are caught up
            entry = self._entry(space, params)
            out: dict = {"k": params.k, "shrinkage": params.shrinkage}
            oldest = entry.queue[0].queued_at if entry.queue else None
            model = entry.model
            return out | {
                "queued": entry.queued,
                "waiting_seconds": round(time.monotonic() - oldest, 3) if oldest else 0.0,
                "catching_up": entry.catch_up_after is not None,
                "scored": entry.scored,
                "dropped": entry.dropped,
                "failures": entry.failures,
                "last_error": entry.last_error,
                "building": None if entry.building_since is None else {
                    "since": datetime.fromtimestamp(entry.building_since, UTC).isoformat(
                        timespec="seconds"),
                    "seconds": round(time.time() - entry.building_since, 1),
                },
                "model": None if model is None else {
                    "training": len(model.seqs), "training_version": model.version,
                    "built_at": datetime.fromtimestamp(model.built_at, UTC).isoformat(
                        timespec="seconds"),
                    "stale": entry.stale_since is not None,
                },
            }  # fmt: skip

    # --- the scoring thread ----------------------------------------------------------
    def _start(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(
                target=self._loop, name="chroma-priority-online", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float = 60.0) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._wake:
                work = None if self._closed else self._next()
                while work is None and not self._closed:
                    self._wake.wait(0.5)
                    work = self._next()
                if self._closed or work is None:
                    # what is queued is stored: the next start's catch-up scores it
                    return
            name, entry, batch = work
            try:
                self._serve(name, entry, batch)
            except Exception as exc:  # the thread outlives any one space's failure
                entry.failures += 1
                entry.last_error = getattr(exc, "detail", None) or str(exc)
                if isinstance(exc, ChromaError):
                    log.warning("online scoring of %s: %s", name, entry.last_error)
                else:
                    log.exception("online scoring of %s failed", name)
                with self._wake:
                    # the rows are stored: a catch-up finds them once the space is tried again
                    _catch_up_after(entry, min((w.first_seq for w in batch), default=1) - 1)
                    entry.retry_at = time.monotonic() + entry.backoff
                    entry.backoff = min(entry.backoff * 2, MAX_BACKOFF_SECONDS)
            else:
                entry.last_error = None
                entry.backoff = FIRST_BACKOFF_SECONDS

    def _next(self) -> tuple[str, _Space, list[_Waiting]] | None:
        """The next space with work and up to ``BATCH_ROWS`` of its queued rows (called
        with the lock held)."""
        now = time.monotonic()
        for name, entry in self._spaces.items():
            if entry.retry_at > now:
                continue
            if entry.queue or entry.catch_up_after is not None or self._rebuild_due(entry):
                batch: list[_Waiting] = []
                rows = 0
                while entry.queue and (not batch or rows + len(entry.queue[0]) <= BATCH_ROWS):
                    batch.append(entry.queue.popleft())
                    rows += len(batch[-1])
                entry.queued -= rows
                return name, entry, batch
        return None

    def _rebuild_due(self, entry: _Space) -> bool:
        """Labelled training rows arrived and have been quiet long enough."""
        return (
            entry.model is not None
            and entry.stale_since is not None
            and time.monotonic() - entry.stale_since >= self.quiet_seconds
        )

    def _serve(self, name: str, entry: _Space, batch: list[_Waiting]) -> None:
        space = self.context.store.get_space(name, count=False)
        if space.space_id != entry.space_id:
            # the space these rows came from was deleted: nothing of it is scored
            with self._wake:
                if self._spaces.get(name) is entry:
                    del self._spaces[name]
            return
        if entry.model is None or self._rebuild_due(entry):
            entry.stale_since = None
            # the build reads every labelled training row: minutes at a million
            entry.building_since = time.time()
            try:
                entry.model = build(self.context, space, entry.params)
            finally:
                entry.building_since = None
        if entry.catch_up_after is not None:
            after, entry.catch_up_after = entry.catch_up_after, None
            self._catch_up(space, entry, after)
        if batch:
            ids = [i for waiting in batch for i in waiting.ids]
            vectors = np.concatenate([waiting.vectors for waiting in batch])
            inferences = np.concatenate([waiting.inferences for waiting in batch])
            outputs = _outputs(batch)
            entry.scored += self._score(space, entry.model, ids, vectors, inferences, outputs)

    def _catch_up(self, space: SpaceInfo, entry: _Space, after: int) -> None:
        """Score the non-training rows above seq ``after`` still without a score, a page at
        a time. From the start, the scored ids are read first so that they are not scored
        again; from a later seq (rows the queue dropped) nearly none are, and
        ``add_priorities`` keeps the first score of any that was."""
        store = self.context.store
        assert entry.model is not None
        scored = (
            pa.array(store.priorities(space.name, n=None).column("id").to_pylist(), pa.string())
            if after == 0
            else pa.array([], pa.string())
        )
        found = 0
        while True:
            if self._closed:
                # what is left is stored: the next start's catch-up reads it
                return
            page = PagedBackup.of(store).rows_page(space.name, after_seq=after, limit=PAGE_ROWS)
            if page.num_rows == 0:
                break
            after = int(page.column("seq")[-1].as_py())
            wanted = pc.and_(
                pc.not_equal(page.column("context"), "training"),
                pc.invert(pc.is_in(page.column("id"), scored)),
            )
            page = page.filter(wanted)
            if page.num_rows:
                found += page.num_rows
                entry.scored += self._score(
                    space, entry.model, page.column("id").to_pylist(), embeddings_of(page),
                    np.asarray(page.column("inference").to_pylist(), dtype=object),
                    page.column("output"),
                )  # fmt: skip
        if found:
            log.info("online scoring of %s: caught up with %d rows", space.name, found)

    def _score(
        self,
        space: SpaceInfo,
        model: Model,
        ids: list,
        vectors: np.ndarray,
        inferences: np.ndarray,
        outputs: pa.ChunkedArray | pa.Array | None,
    ) -> int:
        """Score rows and store their scores; returns how many were stored."""
        if not ids:
            return 0
        seqs, distances = model.neighbors(vectors, model.k)
        scores = score_rows(model, seqs, distances, vectors, inferences, outputs)
        components = pd.DataFrame({name: scores[name] for name in COMPONENTS})
        table = scores_table(
            ids, scores["priority"], components.assign(training_version=model.version),
            datetime.now(UTC).isoformat(timespec="seconds"),
        )  # fmt: skip
        return AddPriorities.of(self.context.store).add_priorities(
            space.name, table, space_id=space.space_id or None
        )


def _catch_up_after(entry: _Space, after: int) -> None:
    """Ask for a catch-up of the rows above seq ``after`` (joined with one pending)."""
    entry.catch_up_after = (
        after if entry.catch_up_after is None else min(entry.catch_up_after, after)
    )


def score_rows(
    model: Model,
    neighbor_seqs: np.ndarray,
    distances: np.ndarray,
    vectors: np.ndarray,
    inferences: np.ndarray,
    outputs: pa.ChunkedArray | pa.Array | None,
) -> dict[str, np.ndarray]:
    """Every component and the priority of rows whose k nearest labelled training rows
    are ``neighbor_seqs`` at ``distances``, as a full computation scores them."""
    query_codes = encode_inferences(inferences, model.classes, len(vectors))
    at, known = locate(model.seqs, neighbor_seqs)
    neighbor_codes = np.where(known, model.codes[np.minimum(at, len(model.codes) - 1)],
                              _ADDED_SINCE)  # fmt: skip
    found = filled_distances(np.where(neighbor_seqs >= 0, distances, np.inf))
    scores = evidence(neighbor_codes, found, query_codes, model.reference_mean,
                      len(model.classes))  # fmt: skip
    with Workers() as workers:
        mahalanobis = model.mahalanobis.using(workers).to_class(vectors, query_codes)
    scores.update(class_evidence(mahalanobis, query_codes, model.reference_mahalanobis))
    scores.update(probe_evidence(model.probe, vectors, query_codes, model.vote_weight))
    n = len(vectors)
    if outputs is None:
        outputs = pa.nulls(n, pa.list_(pa.float32()))
    confidence, scores["margin"], scores["entropy"] = uncertainty(outputs)
    scores["confidence"] = confidence
    scores["priority"] = combine(backing_inputs(scores), scores["novelty"], confidence)
    scores.update(contributions(scores))
    return scores


def build(context, space: SpaceInfo, params: PriorityParams) -> Model:
    """The model of ``space``'s labelled training rows as stored now: their vectors read
    once, the Mahalanobis model fitted, and a reference sample of them searched for its own
    neighbours through the same search new rows go through, so their distances compare."""
    started = time.perf_counter()
    store = context.store
    where = parse(LABELLED_TRAINING)
    catalogue = store.get(space.name, where=where)
    labels = catalogue.column("label").to_numpy(zero_copy_only=False)
    label_seqs = catalogue.column("seq").to_numpy().astype(np.int64)
    del catalogue
    if len(label_seqs) < 2:
        raise InvalidInput(
            f"space {space.name!r} has {len(label_seqs)} labelled training inputs; "
            "priority needs at least 2 (add them with context='training' and labels)"
        )
    seqs, vectors = store.vectors(space.name, where=where)
    at, found = locate(label_seqs, seqs)
    keep = found  # a row labelled and read in the one snapshot each read took
    seqs, vectors = seqs[keep], vectors[keep]
    classes, codes = np.unique(labels[at[keep]].astype(str), return_inverse=True)
    codes = codes.astype(np.int64)
    k = min(params.k, len(seqs) - 1)
    with Workers() as workers:
        mahalanobis = Mahalanobis.of_rows(vectors, codes, len(classes), params.shrinkage, workers)
        reference = _reference(len(seqs), params.reference_rows)
        reference_mahalanobis = np.sort(mahalanobis.to_class(vectors[reference], codes[reference]))
    graph = Graph(vectors, space.metric, Workers().size)
    probe = fit_probe(vectors, codes, len(classes), space.metric, reference)
    # k + 1: the row itself is among its own neighbours
    positions, distances = graph.search(vectors[reference], k + 1)
    own = _own_slot(positions, reference)
    distances = _drop_slot(distances, own, k)
    neighbor_codes = codes[_drop_slot(positions, own, k)]
    weight = vote_weight(neighbor_codes, codes[reference], probe, len(classes))
    mean = filled_distances(distances).mean(axis=1)
    reference_mean = np.sort(mean[np.isfinite(mean)])
    del vectors
    labelled = np.ones(len(seqs), dtype=bool)
    model = Model(params, seqs, codes, classes.astype(object), mahalanobis, reference_mean,
                  reference_mahalanobis, training_version(seqs, labelled), graph, probe,
                  weight)  # fmt: skip
    log.info("online scoring of %s: model of %d labelled training rows built in %.1f s",
             space.name, len(seqs), time.perf_counter() - started)  # fmt: skip
    return model


def _reference(n: int, limit: int) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, limit, replace=False))


def _own_slot(positions: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Each row's slot holding itself among its neighbours (the last slot when the search
    did not return it)."""
    is_own = positions == own[:, None]
    return np.where(is_own.any(axis=1), is_own.argmax(axis=1), positions.shape[1] - 1)


def _drop_slot(values: np.ndarray, slot: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` values of each row without the one in ``slot``."""
    keep = np.ones(values.shape, dtype=bool)
    keep[np.arange(len(values)), slot] = False
    return values[keep].reshape(len(values), values.shape[1] - 1)[:, :k]


def _outputs(batch: list[_Waiting]) -> pa.ChunkedArray:
    """The outputs of the rows of ``batch``, null for adds sent without any."""
    kind = pa.list_(pa.float32())
    chunks: list[pa.Array] = []
    for waiting in batch:
        if waiting.outputs is None:
            chunks.append(pa.nulls(len(waiting), kind))
        else:
            chunks.extend(waiting.outputs.cast(kind).chunks)
    return pa.chunked_array(chunks, kind)
