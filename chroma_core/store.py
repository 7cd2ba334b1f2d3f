"""What a store plugin provides: the interface the service calls, whatever holds the data.

A store keeps model spaces, their rows, the priority scores of rows and retraining
triggers. Every write is all or nothing. Each stored row gets a ``seq``: an int64 unique in
its space, larger than every seq committed before it, which indexes use as their label.
Rows travel as Arrow tables in :func:`chroma_core.schema.rows_schema`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from chroma_core.algorithm import Neighbors
from chroma_core.errors import InvalidInput
from chroma_core.filters import Filter

METRICS = ("l2", "cosine", "ip")
TRIGGER_STATUSES = ("pending", "acknowledged", "done", "failed")

SPACE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


def check_space_name(name) -> None:
    """Refuse a space name that is not 1-128 letters, digits, '_', '-' or '.'; clients check
    it too, since a name with a '/' would reach another route over HTTP."""
    if not isinstance(name, str) or not SPACE_NAME.fullmatch(name):
        raise InvalidInput(
            f"invalid space name {name!r:.80}: use 1-128 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )


# Columns of get(): the catalogue, then embedding/output when asked for.
CATALOGUE_COLUMNS = ("id", "dataset", "context", "input_uri", "inference", "label", "metadata")


@dataclass
class SpaceInfo:
    name: str
    metric: str
    dim: int | None
    count: int
    model: dict = field(default_factory=dict)
    created_at: str = ""

    def to_json(self) -> dict:
        return asdict(self)


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
    def add(self, space: str, rows: pa.Table) -> np.ndarray:
        """Store a validated batch in one transaction and return the seqs given to its rows.

        The first add fixes the space's dimension. An id already stored in the space raises
        ``Conflict`` and stores nothing; a dimension other than the space's raises
        ``DimensionMismatch`` and stores nothing.
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
