"""What a store plugin provides: the interface the service calls, whatever holds the data.

A store keeps model spaces, their rows, the priority scores of rows and retraining
triggers. Every write is all or nothing. Each stored row gets a ``seq``: an int64 unique in
its space, larger than every seq committed before it, which indexes use as their label.
Rows travel as Arrow tables in :func:`chroma_core.schema.rows_schema`.

An add may carry a batch key, the client's name for that batch. The store keeps the key with
the batch, made durable with its rows (in the same transaction, or in an order that a crash
cannot break), for at least :data:`BATCH_KEY_RETENTION_SECONDS`, so that a batch sent again
after its acknowledgement was lost is stored once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import pyarrow as pa

from chroma_core.filters import Filter
from chroma_wire.errors import InvalidInput
from chroma_wire.types import Neighbors, SpaceInfo

# How long a store remembers a batch key, at least: a client retries within seconds, so a
# day covers a server restart in between with room to spare, and the keys of a day take less
# room than the rows they vouch for
BATCH_KEY_RETENTION_SECONDS = 24 * 3600


def restored_batch(rows: pa.Table, seqs) -> tuple[int, int, np.ndarray]:
    """``(dim, n, seqs)`` of a validated batch that :meth:`Store.restore_rows` takes, with
    ``InvalidInput`` unless there is one positive, increasing seq a row."""
    embedding_type = rows.schema.field("embedding").type
    if not pa.types.is_fixed_size_list(embedding_type):
        raise InvalidInput("restore_rows takes a validated batch")
    n = rows.num_rows
    seqs = np.asarray(seqs, dtype=np.int64).reshape(-1)
    if len(seqs) != n:
        raise InvalidInput(f"{len(seqs)} seqs given for {n} rows")
    if n and (seqs[0] < 1 or (np.diff(seqs) <= 0).any()):
        raise InvalidInput("restored seqs must be positive and increasing")
    return embedding_type.list_size, n, seqs


class BatchAlreadyStored(Exception):  # noqa: N818 - an outcome, not a failure
    """What :meth:`Store.add` raises for a batch key it already keeps, with the same rows:
    nothing was stored now, and ``seqs`` are the seqs the batch got when it was stored."""

    def __init__(self, space: str, batch_key: str, seqs: np.ndarray):
        super().__init__(f"batch {batch_key!r} is already stored in space {space!r}")
        self.seqs = seqs


class Store(ABC):
    """Base class of store plugins. Methods may be called from several threads at once."""

    #: the name ``CHROMA_STORE`` selects, e.g. "sqlite"
    name: str = ""

    # --- spaces -------------------------------------------------------------
    @abstractmethod
    def create_space(self, name: str, metric: str, model: dict) -> SpaceInfo:
        """Create a space; raise ``Conflict`` if it exists."""

    @abstractmethod
    def get_space(self, name: str, *, count: bool = True) -> SpaceInfo:
        """The space's info with its current row count (0 when ``count`` is False: callers
        that only need the rest say so); raise ``NotFound`` if absent."""

    @abstractmethod
    def list_spaces(self) -> list[SpaceInfo]:
        """Every space, sorted by name."""

    @abstractmethod
    def delete_space(self, name: str) -> None:
        """Drop the space with its rows, priorities and triggers; ``NotFound`` if absent."""

    # --- rows ---------------------------------------------------------------
    @abstractmethod
    def add(self, space: str, rows: pa.Table, batch_key: str | None = None) -> np.ndarray:
        """Store a validated batch in one transaction and return the seqs given to its rows.

        The first add fixes the space's dimension. An id already stored in the space raises
        ``Conflict`` and stores nothing; a dimension other than the space's raises
        ``DimensionMismatch`` and stores nothing.

        With a ``batch_key``, the key is kept with the batch and its
        :func:`~chroma_core.schema.batch_fingerprint`, durable together with the rows. The
        same key again in the same space, with the same rows, stores nothing and raises
        :class:`BatchAlreadyStored` with the first add's seqs, even when some of those rows
        have been deleted since; with other rows it raises ``Conflict`` naming the key.
        Keys of one space never affect another.
        """

    @abstractmethod
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
        """Rows matching ``ids`` and ``where`` in seq order.

        Columns: ``seq`` (int64), the :data:`CATALOGUE_COLUMNS`, and with
        ``include_embeddings`` also ``embedding`` (fixed-size list of float32) and ``output``.
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

    @abstractmethod
    def vectors(
        self,
        space: str,
        *,
        where: Filter | None = None,
        seqs: np.ndarray | None = None,
        after_seq: int | None = None,
        with_vectors: bool = True,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(seqs int64 (n,), vectors float32 (n, d) or None)`` of matching rows, seq order."""

    @abstractmethod
    def rows_by_seq(self, space: str, seqs: np.ndarray) -> pa.Table:
        """The ``seq`` and catalogue columns of the rows stored under ``seqs`` (any order;
        seqs no longer stored are left out)."""

    @abstractmethod
    def max_seq(self, space: str) -> int:
        """The largest seq ever given in the space (0 when none)."""

    # --- priorities ---------------------------------------------------------
    @abstractmethod
    def replace_priorities(self, space: str, scores: pa.Table) -> None:
        """Replace all priorities of the space at once.

        ``scores`` columns: ``id`` (string), ``priority`` (float64), ``components``
        (string, a JSON object of the component scores), ``computed_at`` (string, ISO time).
        Ids not stored in the space are ignored.
        """

    @abstractmethod
    def priorities(
        self,
        space: str,
        *,
        n: int | None = None,
        where: Filter | None = None,
        min_priority: float | None = None,
    ) -> pa.Table:
        """Scored rows matching ``where``, highest priority first (ties by id).

        Columns: ``id``, ``priority``, ``components``, ``computed_at`` and the catalogue
        columns except ``metadata``.
        """

    # --- triggers -----------------------------------------------------------
    @abstractmethod
    def create_trigger(
        self, space: str, items: pa.Table, note: str | None, selection: dict
    ) -> dict:
        """Store a trigger (status ``pending``) with its items and return it as a dict.

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
        """Triggers, newest first, optionally of one space and one status."""

    @abstractmethod
    def update_trigger(
        self,
        trigger_id: int,
        *,
        status: str | None = None,
        delivery: tuple[str, dict] | None = None,
    ) -> dict:
        """Set the status and/or record one handler's delivery outcome; return the trigger."""

    @abstractmethod
    def trigger_items(self, trigger_id: int) -> pa.Table:
        """The items stored with the trigger, highest priority first."""

    # --- back-up and restore -------------------------------------------------
    @abstractmethod
    def rows_page(self, space: str, *, after_seq: int, limit: int) -> pa.Table:
        """Up to ``limit`` rows with a seq above ``after_seq``, in seq order, as
        :meth:`get` gives them with ``include_embeddings``: an export reads a space of any
        size one page at a time with it."""

    @abstractmethod
    def priorities_page(self, space: str, *, after_id: str | None, limit: int) -> pa.Table:
        """Up to ``limit`` stored scores of rows still stored, with an id above ``after_id``
        (any id when None), in id order (bytewise).

        Columns: ``id``, ``priority``, ``components``, ``computed_at`` as stored, and ``seq``
        (int64), the seq of the row scored."""

    @abstractmethod
    def restore_space(self, info: SpaceInfo) -> SpaceInfo:
        """Create a space as an export recorded it: name, metric, model, ``created_at``
        and ``dim`` (None: the first rows fix it); ``Conflict`` if it exists."""

    @abstractmethod
    def restore_rows(self, space: str, rows: pa.Table, seqs: np.ndarray) -> None:
        """Store a validated batch under the seqs it had where it was exported, in one
        transaction.

        ``seqs`` (int64, one per row) increase and all lie above :meth:`max_seq`, else
        ``Conflict``; ids and dimension are checked as :meth:`add` checks them. Nothing is
        stored when any check fails."""

    @abstractmethod
    def restore_priorities(self, space: str, scores: pa.Table) -> None:
        """Add scores, verbatim, to the ones stored, in one transaction.

        ``scores`` columns as :meth:`replace_priorities` takes them. Every id must name a
        stored row (``NotFound`` otherwise) that has no score yet (``Conflict`` otherwise);
        nothing is stored when one does not."""

    @abstractmethod
    def restore_trigger(self, space: str, trigger: dict, items: pa.Table) -> dict:
        """Store a trigger as an export recorded it and return it as :meth:`get_trigger` does.

        ``trigger`` holds ``id``, ``status``, ``note``, ``selection``, ``created_at``,
        ``updated_at`` and ``deliveries``; ``items`` the columns :meth:`create_trigger`
        takes, kept in their order. The trigger keeps its id unless a trigger of a space
        still stored holds it, then it takes the next free one."""

    # --- search -------------------------------------------------------------
    def nearest_neighbors(
        self, space: SpaceInfo, queries: np.ndarray, k: int, where: Filter | None
    ) -> Neighbors | None:
        """k-NN answered inside the store, or None to leave it to the index plugins.

        A store that can search its own vectors (filter pushed down, or its own vector
        index) answers here; ``Neighbors.meta["method"]`` names how.
        """
        return None

    # --- lifecycle ----------------------------------------------------------
    def close(self) -> None:  # noqa: B027 - optional
        """Release connections and files."""
