"""Following a space live: :class:`Watch`, what ``space.watch()`` returns.

A watch long-polls the server: each request waits up to ``wait`` seconds for new scored
inputs or triggers after the watch's position, and answers with them and the position
after them. Iterating yields one :class:`Watched` event at a time. Every event carries the
position to resume after it, so a consumer that stores the position of the last event it
handled and later calls ``space.watch(after=position)`` misses nothing and sees nothing
twice, across a disconnect, a server restart or its own.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from chroma_client.errors import ConnectionFailed

DEFAULT_WAIT = 10.0
DEFAULT_RETRY_FOR = 60.0


class _Space(Protocol):
    """What a watch needs of :class:`~chroma_client.client.Space`."""

    name: str

    def _call(self, op: str, params: dict | None = None, table: Any = None) -> Any: ...


@dataclass(frozen=True)
class Watched:
    """One event of a watch.

    - ``kind``: ``"input"`` (a new input with its score) or ``"trigger"`` (a trigger was
      recorded, by a call or by a rule);
    - ``position``: resume after this event with ``space.watch(after=position)``;
    - ``input``: for an input, its ``id``, ``priority``, ``dataset``, ``context``,
      ``input_uri``, ``inference``, ``label``, ``seq`` and ``computed_at``;
    - ``trigger``: for a trigger, the :class:`~chroma_client.client.Trigger`.
    """

    kind: str
    position: str
    input: dict | None = None
    trigger: Any = None


class Watch:
    """New scored inputs (at least ``min_priority``, matching ``where``) and new triggers of
    a space, in order, from ``after`` (a position an earlier watch gave; None: from now).

    Iterate over it for :class:`Watched` events; iteration ends once ``timeout`` seconds
    have passed (None: never). ``position`` is where the watch stands: after the last
    event it yielded. A server that cannot be reached is asked again, with back-off, for
    up to ``retry_for`` seconds in a row before ``ConnectionFailed`` is raised.
    ``waiting_for`` names the first input stored but not yet scored, which the watch
    waits for (inputs show in the order they were stored), or is None. ``replaced`` turns
    True when the position it resumed from was of a space since deleted and made again
    under the name: the watch started over at the new space's first input."""

    def __init__(
        self,
        space: _Space,
        *,
        after: str | None = None,
        min_priority: float | None = None,
        where: dict | None = None,
        wait: float = DEFAULT_WAIT,
        timeout: float | None = None,
        retry_for: float = DEFAULT_RETRY_FOR,
        trigger: Callable[[dict], Any] = dict,
    ):
        self._space = space
        self._trigger = trigger
        self._params = {"min_priority": min_priority, "where": where}
        self._wait = float(wait)
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._retry_for = retry_for
        self._events: deque[Watched] = deque()
        self.position: str | None = after
        #: where the next request starts: after every event fetched
        self._from: str | None = after
        self.waiting_for: dict | None = None
        self.replaced = False

    def __iter__(self) -> Iterator[Watched]:
        return self

    def __next__(self) -> Watched:
        while not self._events:
            if self._deadline is not None and time.monotonic() >= self._deadline:
                raise StopIteration
            events = self._fetch()
            if not events:
                self.position = self._from
            self._events.extend(events)
        event = self._events.popleft()
        self.position = event.position
        return event

    def poll(self) -> list[Watched]:
        """One request: the events after the watch's position, waiting up to ``wait``
        seconds (less when ``timeout`` is nearer) for the first; the position moves past
        them all (and past inputs below ``min_priority``). Events an iteration fetched but
        has not yielded yet come first."""
        events = [*self._events, *self._fetch()]
        self._events.clear()
        self.position = self._from
        return events

    def _fetch(self) -> list[Watched]:
        wait = self._wait
        if self._deadline is not None:
            wait = max(0.0, min(wait, self._deadline - time.monotonic()))
        answer = self._ask({**self._params, "wait": wait, "after": self._from})
        self.waiting_for = answer.get("waiting_for")
        self.replaced = self.replaced or bool(answer.get("replaced"))
        self._from = answer["position"]
        return [self._event(raw) for raw in answer["events"]]

    def _event(self, raw: dict) -> Watched:
        if raw["kind"] == "trigger":
            return Watched("trigger", raw["position"], trigger=self._trigger(raw["trigger"]))
        row = {k: v for k, v in raw.items() if k not in ("kind", "position")}
        return Watched("input", raw["position"], input=row)

    def _ask(self, params: dict) -> dict:
        failing_since = None
        pause = 0.2
        while True:
            try:
                return self._space._call("watch", params)[0]
            except ConnectionFailed:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since >= self._retry_for:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 5.0)
