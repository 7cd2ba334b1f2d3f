"""Hook implementations: answer k-NN queries, keep each space's index current."""

from __future__ import annotations

import logging
import queue
import threading

import numpy as np

from chroma_algo_similarity.index import EF_SEARCH, SpaceIndex, exact_search, merge
from chroma_core.algorithm import Neighbors
from chroma_core.hookspecs import hookimpl
from chroma_core.schema import embeddings_of

log = logging.getLogger("chroma.similarity")

STATE = "algo_similarity"
#: filters matching at most this many rows are answered exactly from the store
#: (CHROMA_SIMILARITY_EXACT_LIMIT overrides)
EXACT_LIMIT = 20_000
#: batches handed to the indexer in memory before it reads them back from the store instead
HANDOFF_BATCHES = 4


class Indexes:
    """The indexes of one service and the worker that keeps them caught up."""

    def __init__(self, chroma):
        self.chroma = chroma
        self.directory = chroma.settings.path / "indexes"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.by_space: dict[str, SpaceIndex] = {}
        # search breadth: higher finds more true neighbours and answers slower
        self.ef = int(chroma.settings.extra.get("similarity_ef", EF_SEARCH))
        # lazy: build a space's index on its first unfiltered query instead of as rows arrive
        self.lazy = chroma.settings.extra.get("similarity_build", "eager") == "lazy"
        self.lock = threading.Lock()
        self.pending: queue.Queue = queue.Queue()
        self.worker = threading.Thread(target=self._work, name="chroma-indexer", daemon=True)
        self.worker.start()

    def get(self, space: str, metric: str, dim: int) -> SpaceIndex:
        with self.lock:
            index = self.by_space.get(space)
            if index is None or index.dim != dim or index.metric != metric:
                index = SpaceIndex(self.directory, space, metric, dim, ef=self.ef)
                self.by_space[space] = index
            return index

    def current(self, info) -> SpaceIndex:
        """The space's index, opened without waiting; a catch-up is queued if it is behind."""
        index = self.get(info.name, info.metric, info.dim)
        index.open(self.chroma.store, info.name)
        if index.behind(self.chroma.store, info.name):
            self.pending.put((index, info.name, None, None))
        return index

    def _work(self) -> None:
        while True:
            item = self.pending.get()
            if item is None:
                return
            index, space, seqs, vectors = item
            try:
                if seqs is None:
                    index.catch_up(self.chroma.store, space)
                else:
                    index.add_new(self.chroma.store, space, seqs, vectors)
            except Exception:  # the next query catches up from the store
                log.exception("indexing rows of %s failed", space)

    def close(self) -> None:
        self.pending.put(None)
        self.worker.join(timeout=60)
        for index in list(self.by_space.values()):
            try:
                index.save()
            except Exception:
                log.exception("saving an index failed; it is rebuilt from the store on start")


def _indexes(chroma) -> Indexes:
    state = chroma.state(STATE)
    with chroma._state_lock:
        if "indexes" not in state:
            state["indexes"] = Indexes(chroma)
        return state["indexes"]


@hookimpl
def chroma_nearest_neighbors(chroma, space, queries, k, where):
    store = chroma.store
    # a store that searches its own vectors (filter pushed down, own index) goes first
    answer = store.nearest_neighbors(space, queries, k, where)
    if answer is not None:
        return answer
    if where is not None:
        matching = store.count(space.name, where)
        limit = int(chroma.settings.extra.get("similarity_exact_limit", EXACT_LIMIT))
        if matching <= limit:
            seqs, vectors = store.vectors(space.name, where=where)
            found = exact_search(queries, seqs, vectors, k, space.metric)
            return Neighbors(*found, meta={"method": "exact", "candidates": matching})
        allowed, _ = store.vectors(space.name, where=where, with_vectors=False)
    else:
        allowed = None
    index = _indexes(chroma).current(space)
    found = index.search(queries, k, allowed)
    if found is None:
        seqs, vectors = store.vectors(space.name, where=where)
        found = exact_search(queries, seqs, vectors, k, space.metric)
        return Neighbors(*found, meta={"method": "exact", "candidates": len(seqs)})
    seqs, dists, indexed_seq = found
    # rows stored since the index last caught up are searched exactly, so every
    # acknowledged row is findable at once
    tail_seqs, tail_vectors = store.vectors(space.name, where=where, after_seq=indexed_seq)
    meta = {"method": "hnsw" if allowed is None else "hnsw_filtered", "unindexed": len(tail_seqs)}
    if len(tail_seqs):
        tail = exact_search(queries, tail_seqs, tail_vectors, k, space.metric)
        seqs, dists = merge((seqs, dists), tail, k)
    return Neighbors(seqs, dists, meta=meta)


@hookimpl
def chroma_space_status(chroma, space):
    if space.dim is None:
        return {"index": {"kind": "hnsw", "indexed": 0, "pending": 0, "indexed_seq": 0}}
    index = _indexes(chroma).current(space)
    return {"index": {"kind": "hnsw", **index.status(chroma.store, space.name)}}


@hookimpl
def chroma_rows_added(chroma, space, seqs, rows):
    indexes = _indexes(chroma)
    if indexes.lazy:
        return
    info = chroma.store.get_space(space, count=False)
    index = indexes.get(space, info.metric, info.dim)
    if indexes.pending.qsize() < HANDOFF_BATCHES:
        indexes.pending.put((index, space, np.asarray(seqs), embeddings_of(rows)))
    else:
        # the indexer is behind: it reads these rows back from the store when it gets there,
        # rather than this queue holding a copy of every batch in memory
        indexes.pending.put((index, space, None, None))


@hookimpl
def chroma_rows_deleted(chroma, space, seqs):
    index = _indexes(chroma).by_space.get(space)
    if index is not None:
        index.remove(np.asarray(seqs))


@hookimpl
def chroma_space_deleted(chroma, space):
    indexes = _indexes(chroma)
    with indexes.lock:
        index = indexes.by_space.pop(space, None)
    if index is None:
        index = SpaceIndex(indexes.directory, space, "l2", 0)
    index.drop()


@hookimpl
def chroma_shutdown(chroma):
    state = chroma.state(STATE)
    if "indexes" in state:
        state.pop("indexes").close()
