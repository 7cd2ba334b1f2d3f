"""The value types every part of Chroma passes around: spaces, k-NN answers, results, and
the names of metrics, trigger statuses and catalogue columns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

METRICS = ("l2", "cosine", "ip")
TRIGGER_STATUSES = ("pending", "acknowledged", "done", "failed")
#: the catalogue of a row, as ``get`` returns it before embedding and output
CATALOGUE_COLUMNS = ("id", "dataset", "context", "input_uri", "inference", "label", "metadata")
#: the catalogue fields a ``where`` filter names directly (metadata keys are the others)
CATALOGUE_FIELDS = CATALOGUE_COLUMNS[:-1]
#: what a k-NN answer carries of each neighbour besides its id and distance
NEIGHBOR_COLUMNS = ("input_uri", "dataset", "context", "inference", "label")


@dataclass
class SpaceInfo:
    """A model space; ``count`` is its number of rows, or None where it was not counted
    (counting a large space can take a while, and most callers do not need it).

    ``space_id`` is the store's number for this space, never given to another space of the
    store and larger for a space made later: a space deleted and made again under the same
    name gets a new, larger one, so whatever is derived from a space (an index, cached rows,
    scores being computed) is told apart from what was derived from the space before it.
    0 where a store did not say."""

    name: str
    metric: str
    dim: int | None
    count: int | None
    model: dict = field(default_factory=dict)
    created_at: str = ""
    space_id: int = 0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Result:
    """An algorithm's answer: a table the client turns into a DataFrame, and a summary."""

    table: pa.Table
    meta: dict = field(default_factory=dict)


@dataclass
class Neighbors:
    """k-NN answer: ``seqs`` (n, k) int64 with -1 where fewer than k rows exist,
    ``distances`` (n, k) float32, and ``meta`` saying how it was answered. A search that
    read the neighbours' catalogue with them hands it over as ``rows`` (``seq`` and the
    :data:`NEIGHBOR_COLUMNS` with ``id``, one row per neighbour found), sparing the caller
    a look-up; None otherwise."""

    seqs: np.ndarray
    distances: np.ndarray
    meta: dict = field(default_factory=dict)
    rows: pa.Table | None = None
