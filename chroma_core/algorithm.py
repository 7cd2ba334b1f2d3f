"""What an algorithm plugin provides."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chroma_core.context import PluginContext
    from chroma_wire.types import Result, SpaceInfo


class Algorithm(ABC):
    """An analysis run by name: ``space.run(name, **params)`` on the client.

    A subclass names itself in its class statement, ``class Drift(Algorithm, name="drift")``,
    and the first paragraph of its docstring is its description."""

    #: the name clients run it by
    name: str = ""
    #: one line for ``GET /api/v1/algorithms``
    description: str = ""

    def __init_subclass__(cls, name: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if name is None:
            return
        cls.name = name
        if "description" not in cls.__dict__ and cls.__doc__:
            cls.description = " ".join(inspect.cleandoc(cls.__doc__).split("\n\n")[0].split())

    @abstractmethod
    def run(self, context: PluginContext, space: SpaceInfo, params: dict) -> Result:
        """Run on ``space`` with JSON-like ``params`` (a copy, free to pop from); raise
        ``InvalidInput`` for bad ones. ``context`` holds the store and settings."""
