"""What an algorithm plugin provides, and what the nearest-neighbour hook answers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from chroma_core.service import Chroma
    from chroma_core.store import SpaceInfo


@dataclass
class Result:
    """An algorithm's answer: a table the client turns into a DataFrame, and a summary."""

    table: pa.Table
    meta: dict = field(default_factory=dict)


@dataclass
class Neighbors:
    """k-NN answer: ``seqs`` (n, k) int64 with -1 where fewer than k rows exist,
    ``distances`` (n, k) float32, and ``meta`` saying how it was answered."""

    seqs: np.ndarray
    distances: np.ndarray
    meta: dict = field(default_factory=dict)


class Algorithm(ABC):
    """An analysis run by name: ``space.run(name, **params)`` on the client."""

    #: the name clients run it by
    name: str = ""
    #: one line for ``GET /api/v1/algorithms``
    description: str = ""

    @abstractmethod
    def run(self, chroma: Chroma, space: SpaceInfo, params: dict) -> Result:
        """Run on ``space`` with JSON-like ``params``; raise ``InvalidInput`` for bad ones."""
