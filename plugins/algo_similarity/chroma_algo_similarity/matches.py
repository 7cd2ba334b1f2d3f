"""The rows matching recently used filters, with their vectors, for exact filtered search.

A selective filter is answered exactly: every matching vector is compared with the query.
Reading those vectors out of the store costs far more than comparing them, so the matches
of recent filters are kept in memory, in a budget of bytes, least recently used first out.
An entry stays exact: it records the last seq it has seen and takes the rows stored since
on its next use; deleted rows are dropped from it as the delete hook reports them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from chroma_core.distance import normalized, smallest


@dataclass
class Matches:
    """The rows of one space matching one filter, up to ``upto_seq``, ready to search."""

    seqs: np.ndarray
    #: the vectors as the metric compares them: normalised for cosine, as stored otherwise
    vectors: np.ndarray
    #: squared norms of ``vectors`` (l2 only)
    norms: np.ndarray | None
    upto_seq: int

    @classmethod
    def build(cls, seqs: np.ndarray, vectors: np.ndarray, metric: str, upto_seq: int):
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if metric == "cosine":
            vectors = normalized(vectors).astype(np.float32, copy=False)
        norms = np.einsum("ij,ij->i", vectors, vectors) if metric == "l2" else None
        return cls(np.asarray(seqs, dtype=np.int64), vectors, norms, upto_seq)

    @property
    def nbytes(self) -> int:
        extra = 0 if self.norms is None else self.norms.nbytes
        return self.seqs.nbytes + self.vectors.nbytes + extra

    def extended(self, more: Matches) -> Matches:
        norms = None if self.norms is None else np.concatenate([self.norms, more.norms])
        return Matches(
            np.concatenate([self.seqs, more.seqs]),
            np.concatenate([self.vectors, more.vectors]),
            norms,
            more.upto_seq,
        )

    def without(self, seqs: np.ndarray) -> Matches:
        keep = ~np.isin(self.seqs, seqs)
        norms = None if self.norms is None else self.norms[keep]
        return Matches(self.seqs[keep], self.vectors[keep], norms, self.upto_seq)

    def search(self, queries: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """Exact ``(seqs, distances)``, (n, k), -1 / inf padded, nearest first."""
        n, m = len(queries), len(self.seqs)
        out_seqs = np.full((n, k), -1, dtype=np.int64)
        out_dists = np.full((n, k), np.inf, dtype=np.float32)
        take = min(k, m)
        if take == 0 or n == 0:
            return out_seqs, out_dists
        q = np.asarray(queries, dtype=np.float32)
        # rows of queries at a time, so the distance block stays under about 64 MB
        step = max(1, (64 << 20) // (4 * m))
        for start in range(0, n, step):
            block = q[start : start + step]
            if metric == "cosine":
                block = normalized(block).astype(np.float32, copy=False)
            scores = block @ self.vectors.T
            if metric == "l2":
                assert self.norms is not None  # built with the vectors of an l2 space
                # the query's own norm orders nothing; it is added to the k kept only
                scores = self.norms[None, :] - 2.0 * scores
            else:
                scores = 1.0 - scores
            part = smallest(scores, take)
            found = np.take_along_axis(scores, part, axis=1)
            order = np.argsort(found, axis=1, kind="stable")
            part = np.take_along_axis(part, order, axis=1)
            found = np.take_along_axis(found, order, axis=1)
            if metric == "l2":
                found = np.sqrt(np.maximum(found + (block * block).sum(1)[:, None], 0.0))
            out_seqs[start : start + step, :take] = self.seqs[part]
            out_dists[start : start + step, :take] = found
        return out_seqs, out_dists


class MatchCache:
    """Recent filters' :class:`Matches`, per space, within ``budget`` bytes."""

    def __init__(self, budget: int):
        self.budget = budget
        # by (space name, space_id, filter): a space made again under a deleted one's name
        # never meets the old one's rows
        self.entries: OrderedDict[tuple[str, int, str], Matches] = OrderedDict()
        self.size = 0
        self.lock = threading.Lock()
        # deletes seen per space: an entry read before a delete is not kept after it
        self.deletes: dict[str, int] = {}

    def matches(self, store, space, where, limit: int) -> Matches | None:
        """The rows of ``space`` matching ``where``, complete up to the store's newest row;
        None when more than ``limit`` rows match (the caller searches the index instead)."""
        key = (space.name, space.space_id, repr(where))
        with self.lock:
            cached = self.entries.get(key)
            if cached is not None:
                self.entries.move_to_end(key)
            deletes = self.deletes.get(space.name, 0)
        upto = store.max_seq(space.name)
        if cached is not None and cached.upto_seq >= upto:
            return cached if len(cached.seqs) <= limit else None
        if cached is None and store.count(space.name, where) > limit:
            return None
        after = None if cached is None else cached.upto_seq
        seqs, vectors = store.vectors(space.name, where=where, after_seq=after)
        # rows committed after max_seq was read are left for the next use
        keep = seqs <= upto
        fresh = Matches.build(seqs[keep], vectors[keep], space.metric, upto)
        found = fresh if cached is None else cached.extended(fresh)
        fits = len(found.seqs) <= limit
        self._put(key, found, deletes, fits)
        return found if fits else None

    def remove(self, space: str, seqs: np.ndarray) -> None:
        with self.lock:
            self.deletes[space] = self.deletes.get(space, 0) + 1
            for key in [key for key in self.entries if key[0] == space]:
                entry = self.entries[key]
                smaller = entry.without(seqs)
                self.size += smaller.nbytes - entry.nbytes
                self.entries[key] = smaller

    def forget(self, space: str) -> None:
        with self.lock:
            self.deletes[space] = self.deletes.get(space, 0) + 1
            for key in [key for key in self.entries if key[0] == space]:
                self.size -= self.entries.pop(key).nbytes

    def _put(self, key, found: Matches, deletes: int, fits: bool) -> None:
        with self.lock:
            # a delete that came in meanwhile may be missing from ``found``: not kept
            if self.deletes.get(key[0], 0) != deletes:
                return
            old = self.entries.pop(key, None)
            if old is not None:
                self.size -= old.nbytes
            if not fits or found.nbytes > self.budget:
                return
            self.entries[key] = found
            self.size += found.nbytes
            while self.size > self.budget:
                _, evicted = self.entries.popitem(last=False)
                self.size -= evicted.nbytes
