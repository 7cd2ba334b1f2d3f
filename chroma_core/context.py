"""What a plugin is handed: :class:`PluginContext`.

Every hook that runs on a live service, and every :meth:`Algorithm.run`, receives the same
context as its ``context`` argument. It holds what plugins use and nothing of the service's
own workings: the store, the core and plugin settings, the metrics, a place for each plugin's
state, and the three service operations a plugin may build on (running another algorithm,
the k-NN query every client query goes through, and recording a retraining trigger).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import numpy as np

    from chroma_core.config import PluginSettings, Settings
    from chroma_core.filters import Filter
    from chroma_core.metrics import Metrics
    from chroma_core.store import Store
    from chroma_wire.types import Neighbors, Result, SpaceInfo

T = TypeVar("T")


class PluginContext:
    """One per service, made once its store is open.

    - ``store``: the :class:`~chroma_core.store.Store` serving this service;
    - ``settings``: the core :class:`~chroma_core.config.Settings` (``settings.path`` is
      the data directory a plugin may keep files under);
    - ``plugin_settings``: the typed values of every plugin's declared settings, by name;
    - ``metrics``: the :class:`~chroma_core.metrics.Metrics` served at ``/metrics``.
    """

    def __init__(
        self,
        *,
        store: Store,
        settings: Settings,
        plugin_settings: PluginSettings,
        metrics: Metrics,
        run: Callable[[SpaceInfo, str, dict], Result],
        nearest_neighbors: Callable[[SpaceInfo, np.ndarray, int, Filter | None], Neighbors],
        trigger_retraining: Callable[[SpaceInfo, dict, frozenset[str]], dict],
    ):
        self.store = store
        self.settings = settings
        self.plugin_settings = plugin_settings
        self.metrics = metrics
        self._run = run
        self._nearest_neighbors = nearest_neighbors
        self._trigger_retraining = trigger_retraining
        self._states: dict[str, Any] = {}
        # re-entrant: a factory may ask for another plugin's state
        self._lock = threading.RLock()

    def state(self, owner: str, factory: Callable[[], T]) -> T:
        """The object plugin ``owner`` keeps for the life of this service, made by
        ``factory()`` the first time it is asked for; threads asking at once get the same
        one, made once."""
        with self._lock:
            if owner not in self._states:
                self._states[owner] = factory()
            return self._states[owner]

    def existing_state(self, owner: str) -> Any | None:
        """``owner``'s state if it has been made, else None: for the hooks that must not
        make it (reading metrics, shutting down)."""
        with self._lock:
            return self._states.get(owner)

    def run(self, space: SpaceInfo, algorithm: str, params: dict | None = None) -> Result:
        """Run algorithm ``algorithm`` on ``space`` as ``space.run`` does; ``NotFound`` when
        no plugin provides it."""
        return self._run(space, algorithm, dict(params or {}))

    def nearest_neighbors(
        self, space: SpaceInfo, queries: np.ndarray, k: int, where: Filter | None = None
    ) -> Neighbors:
        """The ``k`` nearest stored rows of each row of ``queries`` ((n, d) float32, d the
        space's dimension) among those matching ``where`` (a parsed filter), found as a
        client's query is; seqs and distances, -1 where fewer than ``k`` rows match."""
        return self._nearest_neighbors(space, queries, k, where)

    def trigger_retraining(
        self, space: SpaceInfo, rule: dict, exclude: frozenset[str] = frozenset()
    ) -> dict:
        """Record a retraining trigger as ``space.trigger_retraining`` does, selected by
        ``rule`` (a dict with ``id``, ``name`` and the selection: ``n``, ``min_priority``,
        ``where``, ``strategy``, ``note``; checked by the caller), never taking an input
        in ``exclude``; the trigger's handlers deliver it and its ``selection`` names the
        rule. ``InvalidInput`` when no scored input qualifies."""
        return self._trigger_retraining(space, rule, exclude)
