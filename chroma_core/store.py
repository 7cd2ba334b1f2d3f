"""What a store plugin provides: the interface the service calls, whatever holds the data.

A store keeps model spaces, their rows, the priority scores of rows and retraining
triggers. Every write is all or nothing. Each stored row gets a ``seq``: an int64 unique in
its space, larger than every seq committed before it, which indexes use as their label.
Rows travel as Arrow tables in :func:`chroma_core.schema.rows_schema`.

An add may carry a batch key, the client's name for that batch. The store keeps the key with
the batch, made durable with its rows (in the same transaction, or in an order that a crash
cannot break), for at least :data:`BATCH_KEY_RETENTION_SECONDS`, so that a batch sent again
after its acknowledgement was lost is stored once.

Who checks what: the service validates; a store checks only what needs its own lock. Every
argument reaches a store checked: a known metric, a JSON-serialisable model, a batch in the
canonical schema (:func:`chroma_core.schema.validate_rows`: fixed-size float32 embeddings,
ids unique within the batch), known trigger statuses, finite scores with unique ids, limits
not negative, restored seqs positive and increasing. A store checks what only it can know
at the moment it writes, under its lock or in its transaction: whether the space exists,
whether an id is already stored, that the first add fixes the dimension (two first adds may
both pass the service's check; :func:`check_dimension` is that check, written once), that
restored seqs lie above those given, and batch keys.

What every store does is :class:`Store`. The methods callers give several keywords to
(:meth:`~Store.get`, :meth:`~Store.vectors`, :meth:`~Store.priorities`,
:meth:`~Store.update_trigger`) are written once, on :class:`Store`: each gathers its
keywords in a frozen record (:class:`RowQuery`, :class:`VectorQuery`, :class:`PriorityQuery`,
:class:`TriggerChange`) and hands it to the one method a store implements for it
(:meth:`~Store.select`, :meth:`~Store.select_vectors`, :meth:`~Store.select_priorities`,
:meth:`~Store.change_trigger`), so the keywords and their defaults are declared in one
place, for every store. Optional powers are small interfaces of their own,
which a store adds to its bases and the service discovers with ``isinstance``:
:class:`PagedBackup` (reading a space a page at a time for a back-up), :class:`Restore`
(writing a back-up back as it was), :class:`NeighborSearch` (k-NN answered inside the
store) and :class:`NeighborJoin` (the neighbours of whole data sets, searched where they are
stored). An operation that needs a power the store lacks fails with
:class:`~chroma_wire.errors.NotSupported` (:meth:`Capability.of`). The conformance suite,
:mod:`chroma_core.testing`, proves a store against this contract.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar, Self

import numpy as np
import pyarrow as pa

from chroma_core.filters import Filter
from chroma_wire.errors import DimensionMismatch, NotFound, NotSupported
from chroma_wire.types import Neighbors, SpaceInfo

# How long a store remembers a batch key, at least: a client retries within seconds, so a
# day covers a server restart in between with room to spare, and the keys of a day take less
# room than the rows they vouch for
BATCH_KEY_RETENTION_SECONDS = 24 * 3600


def check_dimension(space: str, stored: int | None, rows: pa.Table) -> int:
    """The dimension of a validated batch, with ``DimensionMismatch`` unless it is the one
    space ``space`` holds (``stored``; None until the first rows fix it).

    Called under the store's lock: the service checked the batch against the dimension it
    read before, which two first adds of different dimensions may both have found unset."""
    dim = rows.schema.field("embedding").type.list_size
    if stored is not None and stored != dim:
        raise DimensionMismatch(
            f"embeddings have dimension {dim} but space {space!r} holds dimension {stored}"
        )
    return dim


def check_same_space(space: str, found: int, expected: int | None) -> None:
    """Nothing when ``expected`` is None or names the space found under ``space`` now (its
    ``space_id``, ``found``); ``NotFound`` when the space was deleted, and perhaps made
    again, since the work writing to it read it. Called inside the write's transaction or
    lock, so what was derived from a space never lands in another of the same name."""
    if expected is not None and found != expected:
        raise NotFound(
            f"space {space!r} was deleted (and made again) since this work read it; "
            "nothing of it was stored"
        )


class BatchAlreadyStored(Exception):  # noqa: N818 - an outcome, not a failure
    """What :meth:`Store.add` raises for a batch key it already keeps, with the same rows:
    nothing was stored now, and ``seqs`` are the seqs the batch got when it was stored."""

    def __init__(self, space: str, batch_key: str, seqs: np.ndarray):
        super().__init__(f"batch {batch_key!r} is already stored in space {space!r}")
        self.seqs = seqs


@dataclass(frozen=True)
class RowQuery:
    """The rows :meth:`Store.get` asks for: those matching ``ids`` (every id when None) and
    ``where``, in seq order, the first ``offset`` of them skipped and at most ``limit``
    kept (every one when None); with ``include_embeddings`` they carry their embedding
    and output too."""

    ids: list[str] | None = None
    where: Filter | None = None
    limit: int | None = None
    offset: int = 0
    include_embeddings: bool = False


@dataclass(frozen=True)
class VectorQuery:
    """The rows :meth:`Store.vectors` asks for: those matching ``where``, among ``seqs``
    (any seq when None) and above ``after_seq`` (any when None); with ``with_vectors``
    their embeddings too."""

    where: Filter | None = None
    seqs: np.ndarray | None = None
    after_seq: int | None = None
    with_vectors: bool = True


@dataclass(frozen=True)
class PriorityQuery:
    """The scores :meth:`Store.priorities` asks for: the ``n`` highest (every one when
    None) of rows matching ``where``, none below ``min_priority`` (when given)."""

    n: int | None = None
    where: Filter | None = None
    min_priority: float | None = None


@dataclass(frozen=True)
class TriggerChange:
    """What :meth:`Store.update_trigger` changes: the ``status`` (kept when None), and one
    handler's delivery outcome, ``(handler name, outcome)``, to record (none when None)."""

    status: str | None = None
    delivery: tuple[str, dict] | None = None


class Store(ABC):
    """Base class of store plugins: what every store does. Methods may be called from
    several threads at once."""

    #: the name ``CHROMA_STORE`` selects, e.g. "sqlite"
    name: str = ""

    # --- spaces -------------------------------------------------------------
    @abstractmethod
    def create_space(self, name: str, metric: str, model: dict) -> SpaceInfo:
        """Create a space; raise ``Conflict`` if it exists."""

    @abstractmethod
    def get_space(self, name: str, *, count: bool = True) -> SpaceInfo:
        """The space's info; raise ``NotFound`` if absent.

        Its ``count`` is the number of rows stored, as :meth:`count` gives it, or None with
        ``count=False``: callers that need only the rest say so, and are never made to wait
        for a count."""

    @abstractmethod
    def list_spaces(self) -> list[SpaceInfo]:
        """Every space, sorted by name, each with its row count."""

    @abstractmethod
    def delete_space(self, name: str) -> None:
        """Drop the space with its rows, priorities and triggers; ``NotFound`` if absent."""

    # --- rows ---------------------------------------------------------------
    @abstractmethod
    def add(self, space: str, rows: pa.Table, batch_key: str | None = None) -> np.ndarray:
        """Store a validated batch in one transaction and return the seqs given to its rows.

        The first add fixes the space's dimension. An id already stored in the space raises
        ``Conflict`` and stores nothing; a dimension other than the space's raises
        ``DimensionMismatch`` (:func:`check_dimension`) and stores nothing.

        With a ``batch_key``, the key is kept with the batch and its
        :func:`~chroma_core.schema.batch_fingerprint`, durable together with the rows. The
        same key again in the same space, with the same rows, stores nothing and raises
        :class:`BatchAlreadyStored` with the first add's seqs, even when some of those rows
        have been deleted since; with other rows it raises ``Conflict`` naming the key.
        Keys of one space never affect another.
        """

    def get(
        self,
        space: str,
        *,
        ids: list[str] | None = None,
        where: Filter | None = None,
        limit: int | None = None,
        offset: int = 0,
        include_embeddings: bool = False,
    ) -> pa.Table:
        """Rows matching ``ids`` and ``where`` in seq order, as :meth:`select` gives them."""
        return self.select(space, RowQuery(ids, where, limit, offset, include_embeddings))

    @abstractmethod
    def select(self, space: str, query: RowQuery) -> pa.Table:
        """The rows ``query`` asks for, in seq order.

        Columns: ``seq`` (int64), the :data:`CATALOGUE_COLUMNS`, and with
        ``query.include_embeddings`` also ``embedding`` (fixed-size list of float32) and
        ``output``.
        """

    @abstractmethod
    def count(self, space: str, where: Filter | None = None) -> int:
        """How many rows match ``where``."""

    @abstractmethod
    def delete(
        self, space: str, *, ids: list[str] | None = None, where: Filter | None = None
    ) -> np.ndarray:
        """Delete the rows matching ``ids`` and ``where`` (and their priorities) at once.

        Returns the seqs deleted. With neither ``ids`` nor ``where`` nothing is deleted.
        """

    def vectors(
        self,
        space: str,
        *,
        where: Filter | None = None,
        seqs: np.ndarray | None = None,
        after_seq: int | None = None,
        with_vectors: bool = True,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The seqs, and vectors, of matching rows, as :meth:`select_vectors` gives them."""
        return self.select_vectors(space, VectorQuery(where, seqs, after_seq, with_vectors))

    @abstractmethod
    def select_vectors(
        self, space: str, query: VectorQuery
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(seqs int64 (n,), vectors float32 (n, d) or None)`` of the rows ``query`` asks
        for, in seq order; the vectors are None unless ``query.with_vectors``."""

    @abstractmethod
    def rows_by_seq(self, space: str, seqs: np.ndarray) -> pa.Table:
        """The ``seq`` and catalogue columns of the rows stored under ``seqs`` (any order;
        seqs no longer stored are left out)."""

    @abstractmethod
    def max_seq(self, space: str) -> int:
        """The largest seq ever given in the space (0 when none)."""

    # --- priorities ---------------------------------------------------------
    @abstractmethod
    def replace_priorities(
        self, space: str, scores: pa.Table, *, space_id: int | None = None
    ) -> None:
        """Replace all priorities of the space at once.

        ``scores`` columns: ``id`` (string), ``priority`` (float64, finite), ``components``
        (string, a JSON object of the component scores), ``computed_at`` (string, ISO time).
        Ids not stored in the space are ignored. With ``space_id``, nothing is stored unless
        the space is still that one (:func:`check_same_space`).
        """

    def priorities(
        self,
        space: str,
        *,
        n: int | None = None,
        where: Filter | None = None,
        min_priority: float | None = None,
    ) -> pa.Table:
        """Scored rows matching ``where``, as :meth:`select_priorities` gives them."""
        return self.select_priorities(space, PriorityQuery(n, where, min_priority))

    @abstractmethod
    def select_priorities(self, space: str, query: PriorityQuery) -> pa.Table:
        """The scored rows ``query`` asks for, highest priority first (ties by id).

        Columns: ``id``, ``priority``, ``components``, ``computed_at`` and the catalogue
        columns except ``metadata``.
        """

    # --- triggers -----------------------------------------------------------
    @abstractmethod
    def create_trigger(
        self,
        space: str,
        items: pa.Table,
        note: str | None,
        selection: dict,
        *,
        space_id: int | None = None,
    ) -> dict:
        """Store a trigger (status ``pending``) with its items and return it as a dict;
        with ``space_id``, only while the space is still that one (:func:`check_same_space`).

        ``items`` columns: ``id``, ``input_uri``, ``dataset``, ``label``, ``inference``,
        ``priority``. The dict: ``id`` (int), ``space``, ``status``, ``note``,
        ``selection`` (dict), ``count``, ``created_at``, ``updated_at``, ``deliveries``
        (dict: handler name to outcome).
        """

    @abstractmethod
    def get_trigger(self, trigger_id: int) -> dict:
        """The trigger as :meth:`create_trigger` returns it; ``NotFound`` if absent."""

    @abstractmethod
    def list_triggers(self, space: str | None = None, status: str | None = None) -> list[dict]:
        """Triggers, newest first, optionally of one space and one status (one of
        :data:`~chroma_wire.types.TRIGGER_STATUSES`)."""

    def update_trigger(
        self,
        trigger_id: int,
        *,
        status: str | None = None,
        delivery: tuple[str, dict] | None = None,
    ) -> dict:
        """Set the status and/or record one handler's delivery outcome, as
        :meth:`change_trigger` does."""
        return self.change_trigger(trigger_id, TriggerChange(status, delivery))

    @abstractmethod
    def change_trigger(self, trigger_id: int, change: TriggerChange) -> dict:
        """Set the status and/or record the delivery outcome ``change`` holds; return the
        trigger as :meth:`get_trigger` does."""

    @abstractmethod
    def trigger_items(self, trigger_id: int) -> pa.Table:
        """The items stored with the trigger, highest priority first."""

    # --- lifecycle ----------------------------------------------------------
    def close(self) -> None:  # noqa: B027 - optional
        """Release connections and files."""


class Capability(ABC):  # noqa: B024 - a marker: its subclasses declare the methods
    """An optional power of a store, added to the store's bases."""

    #: what the power lets a store do, as an error says that a store cannot
    ability: ClassVar[str] = ""

    @classmethod
    def of(cls, store: Store) -> Self:
        """``store`` as this power, or ``NotSupported`` naming the store and what it cannot
        do: ``Restore.of(store).restore_rows(...)``."""
        if not isinstance(store, cls):
            raise NotSupported(
                f"the {store.name!r} store cannot {cls.ability}: it does not implement "
                f"{cls.__module__}.{cls.__qualname__}"
            )
        return store


class PagedBackup(Capability):
    """Reading a space of any size a page at a time, as a back-up does."""

    ability = "page through a space's rows and scores for a back-up"

    @abstractmethod
    def rows_page(self, space: str, *, after_seq: int, limit: int) -> pa.Table:
        """Up to ``limit`` rows with a seq above ``after_seq``, in seq order, as
        :meth:`Store.get` gives them with ``include_embeddings``."""

    @abstractmethod
    def priorities_page(self, space: str, *, after_id: str | None, limit: int) -> pa.Table:
        """Up to ``limit`` stored scores of rows still stored, with an id above ``after_id``
        (any id when None), in id order (bytewise).

        Columns: ``id``, ``priority``, ``components``, ``computed_at`` as stored, and ``seq``
        (int64), the seq of the row scored."""


#: the space setting a store may keep :meth:`Restore.unfinished_restores` in
RESTORING_SETTING = "chroma.restoring"


class Restore(Capability):
    """Writing a back-up back as it was exported: creation times, seqs, scores and
    triggers kept."""

    ability = "restore a back-up"

    @abstractmethod
    def restore_space(self, info: SpaceInfo) -> SpaceInfo:
        """Create a space as an export recorded it: name, metric, model, ``created_at``
        and ``dim`` (None: the first rows fix it); ``Conflict`` if it exists.

        The space is made *unfinished*, in the same write that makes it: listed by
        :meth:`unfinished_restores` until :meth:`finish_restore` says it is whole, so a
        restore cut short by a crash can be found and removed when the store opens again."""

    @abstractmethod
    def finish_restore(self, space: str) -> None:
        """Mark a space :meth:`restore_space` made as whole, durably; nothing when it is."""

    @abstractmethod
    def unfinished_restores(self) -> list[str]:
        """The spaces made by :meth:`restore_space` and not yet finished, by name."""

    @abstractmethod
    def restore_rows(self, space: str, rows: pa.Table, seqs: np.ndarray) -> None:
        """Store a validated batch under the seqs it had where it was exported, in one
        transaction.

        ``seqs`` (int64, one per row, positive and increasing) must all lie above
        :meth:`Store.max_seq`, else ``Conflict``; ids and dimension are checked as
        :meth:`Store.add` checks them. Nothing is stored when any check fails."""

    @abstractmethod
    def restore_priorities(self, space: str, scores: pa.Table) -> None:
        """Add scores, verbatim, to the ones stored, in one transaction.

        ``scores`` columns as :meth:`Store.replace_priorities` takes them, one score an id.
        Every id must name a stored row (``NotFound`` otherwise) that has no score yet
        (``Conflict`` otherwise); nothing is stored when one does not."""

    @abstractmethod
    def restore_trigger(self, space: str, trigger: dict, items: pa.Table) -> dict:
        """Store a trigger as an export recorded it and return it as
        :meth:`Store.get_trigger` does.

        ``trigger`` holds ``id``, ``status``, ``note``, ``selection``, ``created_at``,
        ``updated_at`` and ``deliveries``; ``items`` the columns :meth:`Store.create_trigger`
        takes, kept in their order. The trigger keeps its id unless a trigger of a space
        still stored holds it, then it takes the next free one."""


class SpaceSettings(Capability):
    """Small named values kept for a space by the plugins that work on it (a space's
    online scoring, say): durable, seen by every server of the store, dropped with the
    space."""

    ability = "keep settings for a space"

    @abstractmethod
    def space_settings(self, space: str) -> dict[str, str]:
        """Every setting of ``space``, by name; ``NotFound`` when there is no such space."""

    @abstractmethod
    def set_space_setting(self, space: str, name: str, value: str | None) -> None:
        """Set ``name`` to ``value`` for ``space``, or remove it (None), durably before
        returning; ``NotFound`` when there is no such space."""


class AddPriorities(Capability):
    """Storing scores a few rows at a time as rows arrive, beside those stored."""

    ability = "add scores to the ones stored"

    @abstractmethod
    def add_priorities(self, space: str, scores: pa.Table, *, space_id: int | None = None) -> int:
        """Store the scores of rows that have none yet, in one transaction; returns how
        many were stored (with ``space_id``, only while the space is still that one).

        ``scores`` columns as :meth:`Store.replace_priorities` takes them, one score an id.
        Ids of rows already scored keep their score, and ids not stored (deleted since
        they were scored) are skipped: a scorer racing a full computation, or a delete,
        never overwrites nor resurrects anything."""


def repeated(ids: list[str]) -> str | None:
    """The first id that appears a second time in ``ids``, or None."""
    seen: set[str] = set()
    for one in ids:
        if one in seen:
            return one
        seen.add(one)
    return None


class ReplaceRows(Capability):
    """Storing rows in place of the stored rows with the same ids: what ``update`` and
    ``upsert`` do."""

    ability = "replace stored rows (update, upsert)"

    @abstractmethod
    def replace(
        self, space: str, rows: pa.Table, batch_key: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Store a validated batch where a row whose id is stored takes that row's place,
        and return ``(seqs, replaced)``: the seqs given to the batch's rows, and those of
        the rows it replaced.

        Rows are never changed in place: a replaced row is deleted with its score, and the
        new one added under a new seq, all or nothing, so a reader sees the old rows or the
        new ones, and what was computed from the old (a score, a training set's version)
        is known to be out of date. A row whose id is not stored is added. Ids repeated in
        the batch raise ``Conflict``; the dimension is checked as :meth:`Store.add` checks
        it; a ``batch_key`` is kept and honoured as :meth:`Store.add` keeps it."""


class FollowRows(Capability):
    """Reading rows in the order they were stored, each with its score: what a watch of a
    space follows."""

    ability = "follow rows in the order they are stored"

    @abstractmethod
    def scored_rows_after(
        self, space: str, *, after_seq: int, limit: int, where: Filter | None = None
    ) -> pa.Table:
        """Up to ``limit`` rows matching ``where`` with a seq above ``after_seq``, in seq
        order, each with its stored score.

        Columns: ``seq`` (int64), ``id``, ``dataset``, ``context``, ``input_uri``,
        ``inference``, ``label``, ``priority`` (float64) and ``computed_at``; the last two
        null for a row without a score. ``NotFound`` when there is no such space."""

    @abstractmethod
    def last_seq(self, space: str) -> int:
        """The highest seq of a row stored in ``space`` (0 when none is). A space's rows
        become visible in seq order: every row with a lower seq is readable once this one
        is, so a reader that has read up to it has missed none."""


class NeighborSearch(Capability):
    """k-NN answered inside the store: a filter pushed down to where the rows are, or the
    store's own vector index. The service asks the store first and the
    ``chroma_nearest_neighbors`` hook only when it answers None."""

    ability = "answer nearest-neighbour queries itself"

    @abstractmethod
    def nearest_neighbors(
        self, space: SpaceInfo, queries: np.ndarray, k: int, where: Filter | None
    ) -> Neighbors | None:
        """The ``k`` nearest rows of ``space`` matching ``where`` for each of ``queries``
        ((n, d) float32, the space's dimension), or None to leave the query to the index
        plugins; ``Neighbors.meta["method"]`` names how it was answered."""

    def answers_unfiltered(self, space: SpaceInfo) -> bool:
        """Whether this store answers every unfiltered query of ``space`` itself, so that
        index plugins need keep no index of it; False unless a store says otherwise."""
        return False


@dataclass(frozen=True)
class JoinQuery:
    """What :meth:`NeighborJoin.join_neighbors` searches: for each row matching ``rows``
    (only a ``share`` of them, drawn at random, when below 1), its ``k`` nearest among the
    rows matching ``among``, never itself. ``*_labelled`` keeps to rows with a label;
    ``columns`` names the columns of the searching rows each page carries; ``probes`` is how
    widely to look (the store's own default when None)."""

    rows: Filter | None
    among: Filter | None
    k: int
    share: float = 1.0
    rows_labelled: bool = False
    among_labelled: bool = False
    columns: tuple[str, ...] = ()
    probes: int | None = None


@dataclass(frozen=True)
class NeighborPage:
    """Some of the searching rows of a join, with their neighbours, nearest first."""

    #: ``(n,)`` int64 seqs of the searching rows, ascending within a page
    seqs: np.ndarray
    #: ``(n, d)`` float32, their embeddings
    vectors: np.ndarray
    #: ``(n, k)`` int64 seqs of their neighbours; -1 where fewer than k were found
    neighbors: np.ndarray
    #: ``(n, k)`` float64 distances in the space's metric; +inf where none was found
    distances: np.ndarray
    #: the columns :attr:`JoinQuery.columns` asked for, one row per searching row
    columns: pa.Table


@dataclass
class JoinedNeighbors:
    """A join under way: about ``rows`` searching rows, in ``pages`` read one at a time."""

    rows: int
    pages: Iterator[NeighborPage]
    meta: dict = field(default_factory=dict)

    def described(self) -> str:
        """How the store searched, in a line, for an answer's meta."""
        meta = self.meta
        return (
            f"{meta.get('method', 'store')}: {meta.get('probes')} of {meta.get('cells')} "
            f"cells probed, generation {meta.get('generation')}"
        )


class NeighborJoin(Capability):
    """The neighbours of whole data sets searched where the rows are stored, a page at a
    time, so that an analysis of any size holds only a page of vectors in memory."""

    ability = "search the neighbours of a whole data set where it is stored"

    @abstractmethod
    def join_neighbors(self, space: SpaceInfo, query: JoinQuery) -> JoinedNeighbors | None:
        """The join :class:`JoinQuery` asks for, or None when the store keeps no index the
        space can be searched through yet (the caller then reads the vectors itself)."""

    @abstractmethod
    def vector_pages(
        self, space: str, where: Filter | None, *, labelled: bool = False, rows: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray, pa.Table]]:
        """``(seqs int64, vectors float32, labels)`` of the rows matching ``where`` (with a
        label, when ``labelled``), at most ``rows`` a page, in seq order; ``labels`` is a
        one-column table, ``label``."""


#: every optional power a store may have
CAPABILITIES: tuple[type[Capability], ...] = (PagedBackup, Restore, NeighborSearch, NeighborJoin)
