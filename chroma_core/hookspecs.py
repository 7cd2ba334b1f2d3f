"""The hooks a Chroma plugin may implement (pluggy project name ``chroma``).

Each argument name means one thing in every hook: ``context`` is the service's
:class:`~chroma_core.context.PluginContext`, ``space`` a :class:`~chroma_wire.types.SpaceInfo`
(``count`` None: not counted), ``seqs`` an int64 array of row seqs, ``where`` a parsed
filter or None.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from chroma_core.algorithm import Algorithm
    from chroma_core.config import PluginSettings, Setting, Settings
    from chroma_core.context import PluginContext
    from chroma_core.filters import Filter
    from chroma_core.store import Store
    from chroma_wire.types import Neighbors, SpaceInfo

hookspec = pluggy.HookspecMarker("chroma")
hookimpl = pluggy.HookimplMarker("chroma")


@hookspec
def chroma_settings() -> list[Setting]:
    """Declare the settings this plugin reads, each from ``CHROMA_<NAME>`` or an override."""


@hookspec(firstresult=True)
def chroma_open_store(
    name: str, settings: Settings, plugin_settings: PluginSettings
) -> Store | None:
    """Open the store ``name`` (``CHROMA_STORE``) if this plugin serves it, else return None."""


@hookspec
def chroma_algorithms() -> list[Algorithm]:
    """Return the algorithms this plugin adds, which ``space.run`` names."""


@hookspec(firstresult=True)
def chroma_nearest_neighbors(
    context: PluginContext, space: SpaceInfo, queries: np.ndarray, k: int, where: Filter | None
) -> Neighbors | None:
    """Answer the ``k`` nearest rows to each of ``queries`` (n, d), or None to leave it."""


@hookspec
def chroma_space_status(context: PluginContext, space: SpaceInfo) -> dict | None:
    """Return what this plugin knows of ``space`` (its index) for ``space.status()``."""


@hookspec
def chroma_rows_added(
    context: PluginContext, space: SpaceInfo, seqs: np.ndarray, rows: pa.Table
) -> None:
    """``rows`` (Arrow, with embeddings) were durably stored in ``space`` under ``seqs``."""


@hookspec
def chroma_rows_deleted(context: PluginContext, space: SpaceInfo, seqs: np.ndarray) -> None:
    """The rows stored under ``seqs`` were deleted from ``space``."""


@hookspec
def chroma_space_deleted(context: PluginContext, space: SpaceInfo) -> None:
    """``space`` (as read before the drop) and all its rows were dropped."""


@hookspec
def chroma_trigger_created(context: PluginContext, trigger: dict, items: pa.Table) -> None:
    """A retraining trigger was stored: deliver it and record the outcome on the trigger."""


@hookspec
def chroma_started(context: PluginContext) -> None:
    """The service is open (its store too): start background work that needs no request,
    quickly (a thread, not the work itself)."""


@hookspec
def chroma_metrics(context: PluginContext) -> None:
    """``/metrics`` is being read: bring this plugin's gauges in ``context.metrics`` up to date."""


@hookspec
def chroma_shutdown(context: PluginContext) -> None:
    """The service is closing: finish or flush what must outlive the process."""
