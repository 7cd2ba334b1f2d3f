"""What an algorithm plugin provides."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chroma_core.context import PluginContext
    from chroma_wire.types import Result, SpaceInfo


class Algorithm(ABC):
    """An analysis run by name: ``space.run(name, **params)`` on the client."""

    #: the name clients run it by
    name: str = ""
    #: one line for ``GET /api/v1/algorithms``
    description: str = ""

    @abstractmethod
    def run(self, context: PluginContext, space: SpaceInfo, params: dict) -> Result:
        """Run on ``space`` with JSON-like ``params`` (a copy, free to pop from); raise
        ``InvalidInput`` for bad ones. ``context`` holds the store and settings."""
