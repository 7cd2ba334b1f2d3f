"""Hook implementations: answer k-NN queries, keep each space's index current."""

from __future__ import annotations

import logging
import queue
import threading

import numpy as np

from chroma_algo_similarity.index import (
    EF_SEARCH,
    SAVE_EVERY_SECONDS,
    SpaceIndex,
    exact_search,
    merge,
)
from chroma_algo_similarity.matches import MatchCache
from chroma_core.config import Setting
from chroma_core.context import PluginContext
from chroma_core.hookspecs import hookimpl
from chroma_core.schema import embeddings_of
from chroma_core.store import NeighborSearch
from chroma_wire.errors import NotFound
from chroma_wire.types import Neighbors

log = logging.getLogger("chroma.similarity")

STATE = "algo_similarity"
#: filters matching at most this many rows are answered exactly
EXACT_LIMIT = 100_000
#: memory for the rows and vectors of recent filters
FILTER_CACHE_MB = 512
#: batches handed to the indexer in memory before it reads them back from the store instead
HANDOFF_BATCHES = 4
SETTINGS = [
    Setting(
        "similarity_ef",
        int,
        EF_SEARCH,
        "HNSW search breadth: higher finds more true neighbours and answers slower",
        minimum=1,
    ),
    Setting(
        "similarity_exact_limit",
        int,
        EXACT_LIMIT,
        "filters matching at most this many rows are searched exactly",
        minimum=0,
    ),
    Setting(
        "similarity_filter_cache_mb",
        int,
        FILTER_CACHE_MB,
        "memory (MB) for the matching rows and vectors of recent filters",
        minimum=0,
    ),
    Setting(
        "similarity_build",
        str,
        "eager",
        "eager: index rows as they arrive; lazy: build a space's index on its first "
        "unfiltered query",
        choices=("eager", "lazy"),
    ),
    Setting(
        "similarity_save_seconds",
        float,
        SAVE_EVERY_SECONDS,
        "seconds of indexing between saves of a space's index (a crash loses at most this)",
        minimum=0,
    ),
]


class Indexes:
    """The indexes of one service and the worker that keeps them caught up."""

    def __init__(self, context: PluginContext):
        self.store = context.store
        self.directory = context.settings.path / "indexes"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.by_space: dict[str, SpaceIndex] = {}
        values = context.plugin_settings
        self.ef = values["similarity_ef"]
        self.save_every = values["similarity_save_seconds"]
        self.lazy = values["similarity_build"] == "lazy"
        self.exact_limit = values["similarity_exact_limit"]
        self.matches = MatchCache(values["similarity_filter_cache_mb"] << 20)
        self.lock = threading.Lock()
        self.pending: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self.catching_up: set[SpaceIndex] = set()
        self.worker = threading.Thread(target=self._work, name="chroma-indexer", daemon=True)
        self.worker.start()

    def get(self, info) -> SpaceIndex:
        """The index of space ``info``: a new one when the one held is of another space of
        that name (deleted since, here or by another server of the store), which is
        dropped."""
        with self.lock:
            index = self.by_space.get(info.name)
            if index is not None and index.space_id > info.space_id:
                # ``info`` was read before its space was deleted and made again
                raise NotFound(f"space {info.name!r} was deleted")
            if (
                index is None
                or index.dim != info.dim
                or index.metric != info.metric
                or index.space_id != info.space_id
            ):
                if index is not None and index.space_id != info.space_id:
                    index.drop()
                index = SpaceIndex(
                    self.directory, info.name, info.metric, info.dim, ef=self.ef,
                    save_every=self.save_every, stopping=self.stopping, space_id=info.space_id,
                )  # fmt: skip
                self.by_space[info.name] = index
            return index

    def current(self, info, upto: int | None = None) -> SpaceIndex:
        """The space's index, opened without waiting; a catch-up is queued if it is behind
        the store's newest seq (``upto``, read from the store when not given)."""
        index = self.get(info)
        index.open(self.store, info.name)
        if upto is None:
            upto = self.store.max_seq(info.name)
        if upto > index.indexed_seq:
            self.queue_catch_up(index, info.name)
        return index

    def queue_catch_up(self, index: SpaceIndex, space: str) -> None:
        # one catch-up queued per index is enough: it runs up to the newest seq
        with self.lock:
            if index in self.catching_up:
                return
            self.catching_up.add(index)
        self.pending.put((index, space, None, None))

    def _work(self) -> None:
        while True:
            item = self.pending.get()
            if item is None:
                return
            index, space, seqs, vectors = item
            try:
                if seqs is None:
                    with self.lock:
                        self.catching_up.discard(index)
                    more = index.catch_up(self.store, space)
                else:
                    more = index.add_new(self.store, space, seqs, vectors)
                if more:  # behind the other spaces waiting: no space starves the rest
                    self.queue_catch_up(index, space)
            except NotFound:
                # the space was dropped while its rows waited here: nothing is left to index
                log.debug("space %s was dropped before its rows were indexed", space)
            except Exception:  # the next query catches up from the store
                log.exception("indexing rows of %s failed", space)

    def close(self) -> None:
        # a catch-up under way ends after its window; what it indexed is saved below
        self.stopping.set()
        self.pending.put(None)
        self.worker.join(timeout=60)
        for index in list(self.by_space.values()):
            try:
                index.save()
            except Exception:
                log.exception("saving an index failed; it is rebuilt from the store on start")


def _indexes(context: PluginContext) -> Indexes:
    return context.state(STATE, lambda: Indexes(context))


def _store_answers(context: PluginContext, space) -> bool:
    """Whether the store answers the space's unfiltered queries itself: then no index of
    it is built here, which would only hold a copy of its vectors in memory."""
    store = context.store
    return isinstance(store, NeighborSearch) and store.answers_unfiltered(space)


@hookimpl
def chroma_settings():
    return SETTINGS


@hookimpl
def chroma_nearest_neighbors(context, space, queries, k, where):
    store = context.store
    indexes = _indexes(context)
    allowed = None
    if where is not None:
        matches = indexes.matches.matches(store, space, where, indexes.exact_limit)
        if matches is not None:
            seqs, dists = matches.search(queries, k, space.metric)
            return Neighbors(seqs, dists, meta={"method": "exact", "candidates": len(matches.seqs)})
        allowed, _ = store.vectors(space.name, where=where, with_vectors=False)
    upto = store.max_seq(space.name)
    index = indexes.current(space, upto)
    found = index.search(queries, k, allowed)
    if found is None:
        seqs, vectors = store.vectors(space.name, where=where)
        found = exact_search(queries, seqs, vectors, k, space.metric)
        return Neighbors(*found, meta={"method": "exact", "candidates": len(seqs)})
    seqs, dists, indexed_seq = found
    meta = {"method": "hnsw" if allowed is None else "hnsw_filtered", "unindexed": 0}
    if indexed_seq < upto:
        # rows stored since the index last caught up are searched exactly, so every
        # acknowledged row is findable at once
        tail_seqs, tail_vectors = store.vectors(space.name, where=where, after_seq=indexed_seq)
        meta["unindexed"] = len(tail_seqs)
        if len(tail_seqs):
            tail = exact_search(queries, tail_seqs, tail_vectors, k, space.metric)
            seqs, dists = merge((seqs, dists), tail, k)
    return Neighbors(seqs, dists, meta=meta)


@hookimpl
def chroma_space_status(context, space):
    if _store_answers(context, space):
        return None
    if space.dim is None:
        return {"index": {"kind": "hnsw", "indexed": 0, "pending": 0, "indexed_seq": 0}}
    index = _indexes(context).current(space)
    return {"index": {"kind": "hnsw", **index.status(context.store, space.name)}}


@hookimpl
def chroma_metrics(context):
    indexes: Indexes | None = context.existing_state(STATE)
    gauge = context.metrics.gauge(
        "chroma_index_rows",
        "Rows of each open similarity index: indexed, and stored but still pending.",
        ("space", "state"),
    )
    gauge.clear()
    if indexes is None:
        return
    with indexes.lock:
        opened = list(indexes.by_space.items())
    # only the indexes this server has open: reading metrics never loads or builds one
    for space, index in opened:
        if index.index is None:
            continue
        try:
            status = index.status(context.store, space)
        except NotFound:  # dropped since
            continue
        gauge.set(status["indexed"], space=space, state="indexed")
        gauge.set(status["pending"], space=space, state="pending")


@hookimpl
def chroma_rows_added(context, space, seqs, rows):
    indexes = _indexes(context)
    if indexes.lazy or _store_answers(context, space):
        return
    try:
        index = indexes.get(space)
    except NotFound:  # deleted, and made again, since these rows were stored
        return
    if indexes.pending.qsize() < HANDOFF_BATCHES:
        indexes.pending.put((index, space.name, np.asarray(seqs), embeddings_of(rows)))
    else:
        # the indexer is behind: it reads these rows back from the store when it gets there,
        # rather than this queue holding a copy of every batch in memory
        indexes.queue_catch_up(index, space.name)


@hookimpl
def chroma_rows_deleted(context, space, seqs):
    indexes = _indexes(context)
    indexes.matches.remove(space.name, np.asarray(seqs))
    index = indexes.by_space.get(space.name)
    if index is not None and index.space_id == space.space_id:
        index.remove(np.asarray(seqs))


@hookimpl
def chroma_space_deleted(context, space):
    indexes = _indexes(context)
    indexes.matches.forget(space.name)
    with indexes.lock:
        index = indexes.by_space.pop(space.name, None)
        if index is None:
            index = SpaceIndex(indexes.directory, space.name, "l2", 0)
        # under the lock: an index of a space made again meanwhile is not made before the
        # old one's files are gone
        index.drop()


@hookimpl
def chroma_shutdown(context):
    indexes: Indexes | None = context.existing_state(STATE)
    if indexes is not None:
        indexes.close()
