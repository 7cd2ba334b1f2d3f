"""One hnswlib index per model space, derived from the store and persisted beside it.

The store is the truth. An index remembers the space it was built for (its ``space_id``),
the largest seq it holds (``indexed_seq``) and how many live rows it holds; on load it is
checked against the store and rebuilt when they disagree (another space of the same name,
a seq beyond any the store gave, another row count), then caught up with the rows stored
since. Its meta also holds the SHA-256 of the index file: a file torn by a crash or a lost
disk write loads without complaint in hnswlib and answers wrongly, so a file that does not
match is rebuilt too, as is a meta that is not what a save writes.

An index whose space was deleted is dropped for good: rows of the deleted space still on
their way to it are thrown away, and it is never saved again, so nothing of it reaches the
index of a space made later under the same name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import hnswlib
import numpy as np

from chroma_core.distance import exact_knn
from chroma_wire.errors import NotFound

log = logging.getLogger("chroma.similarity")

M = 16
EF_CONSTRUCTION = 100
EF_SEARCH = 128
SAVE_EVERY_SECONDS = 30.0
#: rows added to the graph per lock hold: small enough that a query waits little
CHUNK_ROWS = 5_000
#: rows read back from the store at a time when catching up
READ_ROWS = 100_000
#: windows of ``READ_ROWS`` seqs one space's catch-up reads before the worker turns to the
#: other spaces waiting, and comes back to it after them
WINDOWS_PER_TURN = 5


class SpaceIndex:
    """The index of one space. Every method takes the lock; hnswlib is not safe otherwise."""

    def __init__(
        self,
        directory: Path,
        space: str,
        metric: str,
        dim: int,
        ef: int = EF_SEARCH,
        save_every: float = SAVE_EVERY_SECONDS,
        stopping: threading.Event | None = None,
        space_id: int = 0,
    ):
        self.space = space
        self.space_id = space_id
        self.path = directory / f"{space}.hnsw"
        self.meta_path = directory / f"{space}.json"
        self.tmp_path = directory / f"{space}.hnsw.tmp"
        self.tmp_meta_path = directory / f"{space}.json.tmp"
        self.metric = metric
        self.dim = dim
        self.ef = ef
        self.save_every = save_every
        # set when the service closes: a catch-up stops after the window it is in, before
        # the store it reads from is closed
        self.stopping = stopping or threading.Event()
        self.lock = threading.RLock()
        # one builder at a time; held across chunks, while ``lock`` is held only per chunk
        self.build_lock = threading.Lock()
        # one save at a time: saves share the temporary files
        self.save_lock = threading.Lock()
        self.index: hnswlib.Index | None = None
        self.indexed_seq = 0
        self.live = 0
        # seqs deleted before they were indexed: skipped when their add arrives
        self.tombstones: set[int] = set()
        self.dirty = False
        self.last_save = time.monotonic()
        # set once the space is deleted: nothing is added to, opened or saved of it again
        self.dropped = False

    # --- keeping up with the store ------------------------------------------
    def open(self, store, space: str) -> None:
        """Load the saved index if it agrees with the store, else start an empty one (the
        worker then fills it); never waits for a build. ``NotFound`` once dropped."""
        with self.lock:
            if self.dropped:
                raise NotFound(f"space {space!r} was deleted")
            if self.index is None:
                self._open(store, space)

    def _same_space(self, store, space: str) -> bool:
        """Whether ``space`` in the store is still the space this index was built for."""
        if self.dropped:
            return False
        return not self.space_id or store.get_space(space, count=False).space_id == self.space_id

    def catch_up(self, store, space: str) -> bool:
        """Index rows stored after ``indexed_seq``, a chunk at a time, so that queries get
        the lock between chunks; True when it stopped to let other spaces have a turn
        before it was done (the caller queues it again)."""
        self.open(store, space)
        with self.build_lock:
            return self._catch_up(store, space)

    def _catch_up(self, store, space: str) -> bool:
        """:meth:`catch_up` with ``build_lock`` held (it is not reentrant)."""
        # rows committed later get larger seqs, so everything up to here is visible now
        upper = store.max_seq(space)
        for _ in range(WINDOWS_PER_TURN):
            if self.indexed_seq >= upper or self.stopping.is_set():
                return False
            # a bounded range of seqs at a time, so memory stays bounded on big spaces
            last = min(self.indexed_seq + READ_ROWS, upper)
            window = np.arange(self.indexed_seq + 1, last + 1)
            seqs, vectors = store.vectors(space, seqs=window)
            if not len(seqs):
                # deleted rows, or restored ones numbered far apart, leave gaps of any size:
                # the next window starts at the next stored row, not a window further
                later, _ = store.vectors(space, after_seq=last, with_vectors=False)
                later = later[later <= upper]
                last = int(later.min()) - 1 if len(later) else upper
            # read back: the rows are this space's only if it is still the same one now
            if not self._same_space(store, space):
                return False
            if len(seqs):
                self._add_in_chunks(seqs, vectors)
            with self.lock:
                # deleted seqs leave gaps: the window is done whatever it held
                self.indexed_seq = max(self.indexed_seq, last)
        return self.indexed_seq < upper and not self.stopping.is_set()

    def add_new(self, store, space: str, seqs: np.ndarray, vectors: np.ndarray) -> bool:
        """Index rows just stored; falls back to reading the store if there is a gap (True
        when that catch-up has more to do, as :meth:`catch_up`)."""
        self.open(store, space)
        with self.build_lock:
            if len(seqs) and int(seqs[0]) == self.indexed_seq + 1:
                self._add_in_chunks(seqs, vectors)
            elif len(seqs) and int(seqs.max()) > self.indexed_seq:
                return self._catch_up(store, space)
        return False

    def _add_in_chunks(self, seqs: np.ndarray, vectors: np.ndarray) -> None:
        for start in range(0, len(seqs), CHUNK_ROWS):
            with self.lock:
                self._add(seqs[start : start + CHUNK_ROWS], vectors[start : start + CHUNK_ROWS])
        # outside the lock: a save takes the save lock first, then this one
        self._maybe_save()

    def status(self, store, space: str) -> dict:
        """Rows in the index, and stored rows it has not caught up with yet."""
        with self.lock:
            indexed_seq, live = self.indexed_seq, self.live
        pending, _ = store.vectors(space, after_seq=indexed_seq, with_vectors=False)
        return {"indexed": live, "pending": int(len(pending)), "indexed_seq": indexed_seq}

    def remove(self, seqs: np.ndarray) -> None:
        with self.lock:
            self.tombstones.update(int(s) for s in seqs[seqs > self.indexed_seq])
            if self.index is None:
                return
            for seq in seqs[seqs <= self.indexed_seq]:
                try:
                    self.index.mark_deleted(int(seq))
                    self.live -= 1
                except RuntimeError:
                    pass  # never indexed or already deleted
            self.dirty = True

    def _open(self, store, space: str) -> None:
        # what a save cut short left behind (the directory is this service's alone)
        for leftover in (self.tmp_path, self.tmp_meta_path):
            _remove(leftover)
        if self.path.exists() and self.meta_path.exists():
            problem = self._load_checked(store, space)
            if problem is None:
                return
            log.warning("index of %s %s; rebuilding it from the store", space, problem)
        elif self.path.exists() or self.path.is_symlink():
            log.warning("index of %s has no meta (a save was cut short); rebuilding", space)
        # nothing of an index that is not used is left to be loaded later
        for path in (self.path, self.meta_path):
            _remove(path)
        self._new(capacity=max(1024, store.count(space)))

    def _load_checked(self, store, space: str) -> str | None:
        """Load the saved index; what is wrong with it, or None when it agrees with the
        store (then it is loaded)."""
        try:
            problem = self._load()
        except Exception as exc:  # whatever a damaged file makes hnswlib or json raise
            problem = f"is unreadable ({type(exc).__name__}: {exc})"
        if problem is None:
            stored, _ = store.vectors(space, with_vectors=False)
            if self.indexed_seq > store.max_seq(space):
                problem = (
                    f"claims seq {self.indexed_seq}, beyond the store's last "
                    f"({store.max_seq(space)})"
                )
            elif int((stored <= self.indexed_seq).sum()) != self.live:
                problem = "disagrees with the store's rows"
            else:
                return None
        self.index = None
        self.indexed_seq = 0
        self.live = 0
        return problem

    def _new(self, capacity: int) -> None:
        self.index = hnswlib.Index(space=self.metric, dim=self.dim)
        self.index.init_index(
            max_elements=capacity, ef_construction=EF_CONSTRUCTION, M=M, allow_replace_deleted=False
        )
        self.index.set_ef(self.ef)
        self.indexed_seq = 0
        self.live = 0
        self.dirty = True

    def _load(self) -> str | None:
        """Load the saved pair, or say why it cannot be used."""
        meta = json.loads(self.meta_path.read_text())
        problem = _meta_problem(meta)
        if problem is not None:
            return problem
        if meta["dim"] != self.dim or meta["metric"] != self.metric:
            return "was built for another dimension or metric"
        if meta.get("space_id", 0) != self.space_id:
            return "was built for another space of the same name (deleted since)"
        if not self.path.is_file() or _sha256(self.path) != meta["sha256"]:
            return "does not match the checksum in its meta"
        index = hnswlib.Index(space=self.metric, dim=self.dim)
        # the capacity the file itself records (checksummed above), never a larger one
        index.load_index(str(self.path), max_elements=0)
        index.set_ef(self.ef)
        self.index = index
        self.indexed_seq = int(meta["indexed_seq"])
        self.live = int(meta["live"])
        self.dirty = False
        return None

    def _add(self, seqs: np.ndarray, vectors: np.ndarray) -> None:
        if self.index is None:
            return  # dropped with its space while these rows waited
        top = int(seqs.max())
        if self.tombstones:
            keep = ~np.isin(seqs, np.fromiter(self.tombstones, np.int64))
            seqs, vectors = seqs[keep], vectors[keep]
            self.tombstones = {s for s in self.tombstones if s > top}
        self.indexed_seq = max(self.indexed_seq, top)
        self.dirty = True
        if not len(seqs):
            return
        needed = self.index.get_current_count() + len(seqs)
        if needed > self.index.get_max_elements():
            self.index.resize_index(max(needed, 2 * self.index.get_max_elements()))
        self.index.add_items(vectors, seqs.astype(np.uint64), num_threads=-1)
        self.live += len(seqs)

    # --- persistence --------------------------------------------------------
    def _maybe_save(self) -> None:
        if self.dirty and time.monotonic() - self.last_save > self.save_every:
            self.save()

    def save(self) -> None:
        """Write the index and its meta so that a crash at any point leaves the old pair,
        no meta (the index is rebuilt), or the new pair; both are synced to disk before
        they replace the old, and the meta carries the file's checksum."""
        with self.save_lock:
            with self.lock:
                if self.index is None or not self.dirty or self.dropped:
                    return
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.index.save_index(str(self.tmp_path))
                meta = {
                    "space_id": self.space_id,
                    "dim": self.dim,
                    "metric": self.metric,
                    "indexed_seq": self.indexed_seq,
                    "live": self.live,
                    "capacity": self.index.get_max_elements(),
                }
                self.dirty = False
                self.last_save = time.monotonic()
            # the file is complete: queries and indexing go on while it is checked and synced
            try:
                meta["sha256"] = _sha256(self.tmp_path, sync=True)
                _write_synced(self.tmp_meta_path, json.dumps(meta).encode())
                # the meta names what the index holds, so it is replaced last
                self.meta_path.unlink(missing_ok=True)
                os.replace(self.tmp_path, self.path)
                os.replace(self.tmp_meta_path, self.meta_path)
                _sync_directory(self.path.parent)
            except BaseException:
                with self.lock:
                    self.dirty = True
                raise

    def drop(self) -> None:
        """Forget the index and its files for good (its space was deleted)."""
        with self.save_lock, self.lock:
            self.dropped = True
            self.index = None
            for path in (self.path, self.meta_path, self.tmp_path, self.tmp_meta_path):
                _remove(path)

    # --- search -------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None):
        """``(seqs, distances, indexed_seq)``: (n, k), -1 padded, over the indexed rows only
        (the caller searches the rest exactly); ``allowed`` restricts to those seqs. None
        when the index cannot answer (too few reachable rows)."""
        with self.lock:
            snapshot = self.indexed_seq
            if allowed is not None:
                allowed = allowed[allowed <= snapshot]
            found = self._search(queries, k, allowed)
            return None if found is None else (*found, snapshot)

    def _search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None):
        n = len(queries)
        seqs = np.full((n, k), -1, dtype=np.int64)
        dists = np.full((n, k), np.inf, dtype=np.float32)
        pool = self.live if allowed is None else len(allowed)
        want = min(k, pool)
        if self.index is None or self.live == 0 or want == 0:
            return seqs, dists
        fetch = want if allowed is None else min(self.live, want * 4)
        allowed_set = None if allowed is None else allowed
        while True:
            self.index.set_ef(max(self.ef, 4 * fetch))
            try:
                labels, found = self.index.knn_query(queries, k=fetch, num_threads=-1)
            except RuntimeError:  # fewer reachable elements than asked for
                return None
            labels = labels.astype(np.int64)
            if allowed_set is None:
                seqs[:, :want], dists[:, :want] = labels[:, :want], found[:, :want]
                break
            keep = np.isin(labels, allowed_set)
            if (keep.sum(axis=1) >= want).all():
                order = np.argsort(~keep, axis=1, kind="stable")[:, :want]
                seqs[:, :want] = np.take_along_axis(labels, order, axis=1)
                dists[:, :want] = np.take_along_axis(found, order, axis=1)
                break
            if fetch >= self.live:
                return None
            fetch = min(self.live, fetch * 4)
        if self.metric == "l2":
            np.sqrt(np.maximum(dists, 0, out=dists), out=dists, where=np.isfinite(dists))
        return seqs, dists


#: what a save writes in a meta, and the type of each
_META = {"dim": int, "metric": str, "indexed_seq": int, "live": int, "capacity": int,
         "sha256": str}  # fmt: skip


def _meta_problem(meta) -> str | None:
    """What makes ``meta`` (read from a meta file) other than what a save writes."""
    if not isinstance(meta, dict):
        return f"has a meta that is {type(meta).__name__}, not an object"
    for name, kind in _META.items():
        value = meta.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"has a meta whose {name} is {value!r:.40}, not {kind.__name__}"
    if not isinstance(meta.get("space_id", 0), int):
        return "has a meta whose space_id is not a number"
    if meta["indexed_seq"] < 0 or not 0 <= meta["live"] <= meta["capacity"]:
        return "has a meta whose counts cannot be"
    return None


def _remove(path: Path) -> None:
    """Remove what is at ``path``, a file, a link or a directory, if anything is."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _sha256(path: Path, sync: bool = False) -> str:
    with open(path, "rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
        if sync:
            os.fsync(file.fileno())
    return digest


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def merge(first: tuple, second: tuple, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest of two ``(seqs, distances)`` answers over disjoint rows."""
    seqs = np.concatenate([first[0], second[0]], axis=1)
    dists = np.concatenate([first[1], second[1]], axis=1)
    order = np.argsort(dists, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(seqs, order, axis=1), np.take_along_axis(dists, order, axis=1)


def exact_search(queries: np.ndarray, seqs: np.ndarray, vectors: np.ndarray, k: int, metric: str):
    """Exact k-NN over the given rows, in the same (seqs, distances) form as the index."""
    n = len(queries)
    out_seqs = np.full((n, k), -1, dtype=np.int64)
    out_dists = np.full((n, k), np.inf, dtype=np.float32)
    idx, dists = exact_knn(queries, vectors, k, metric)
    out_seqs[:, : idx.shape[1]] = seqs[idx]
    out_dists[:, : idx.shape[1]] = dists
    return out_seqs, out_dists
