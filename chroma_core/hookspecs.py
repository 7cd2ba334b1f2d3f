"""The hooks a Chroma plugin may implement (pluggy project name ``chroma``).

``chroma`` arguments are the running :class:`chroma_core.service.Chroma`.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("chroma")
hookimpl = pluggy.HookimplMarker("chroma")


@hookspec(firstresult=True)
def chroma_open_store(name, settings):
    """Return a :class:`chroma_core.store.Store` for store ``name``, or None if not yours."""


@hookspec
def chroma_algorithms():
    """Return a list of :class:`chroma_core.algorithm.Algorithm` this plugin adds."""


@hookspec(firstresult=True)
def chroma_nearest_neighbors(chroma, space, queries, k, where):
    """Return a :class:`chroma_core.algorithm.Neighbors` for ``queries`` (n, d) in ``space``."""


@hookspec
def chroma_space_status(chroma, space):
    """Return a dict of what this plugin knows of ``space`` (e.g. its index), or None."""


@hookspec
def chroma_rows_added(chroma, space, seqs, rows):
    """``rows`` (Arrow table with embeddings) were durably stored under ``seqs``."""


@hookspec
def chroma_rows_deleted(chroma, space, seqs):
    """The rows stored under ``seqs`` were deleted from ``space``."""


@hookspec
def chroma_space_deleted(chroma, space):
    """Space ``space`` (a name) and all its rows were dropped."""


@hookspec
def chroma_trigger_created(chroma, trigger, items):
    """A retraining trigger was stored; deliver it and record the outcome on the trigger."""


@hookspec
def chroma_metrics(chroma):
    """``/metrics`` is being read: bring this plugin's gauges in ``chroma.metrics`` up to date."""


@hookspec
def chroma_shutdown(chroma):
    """The service is closing: flush what must outlive the process."""
