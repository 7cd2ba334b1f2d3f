"""Counters, gauges and histograms of one service, read as Prometheus text at ``/metrics``.

Every :class:`chroma_core.service.Chroma` holds a :class:`Metrics` as ``chroma.metrics``.
Plugins declare and update their own metrics through it, by name, and never import
``prometheus_client`` themselves::

    seconds = chroma.metrics.histogram("chroma_x_seconds", "Time to run x.", ("space",))
    with seconds.time(space=space.name):
        ...

Declaring a name again returns the metric declared first. Gauges that describe state
(index sizes) are brought up to date in the ``chroma_metrics`` hook, which the server calls
just before each reading.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import prometheus_client
from prometheus_client import CollectorRegistry

#: seconds, from a fast request to a long analysis
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
)
CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
REQUEST = ("route", "status")


class _Metric:
    """One metric of any kind; updates name their labels by keyword."""

    def __init__(self, inner, labels: Sequence[str]):
        self._inner = inner
        self._labels = tuple(labels)

    def _child(self, labels: dict):
        if set(labels) != set(self._labels):
            raise ValueError(f"expected labels {self._labels}, got {tuple(sorted(labels))}")
        return self._inner.labels(**labels) if self._labels else self._inner

    def clear(self) -> None:
        """Forget every label set (a gauge rewritten whole at each reading)."""
        if self._labels:
            self._inner.clear()


M = TypeVar("M", bound=_Metric)


class Counter(_Metric):
    def inc(self, amount: float = 1, **labels: str) -> None:
        self._child(labels).inc(amount)


class Gauge(_Metric):
    def set(self, value: float, **labels: str) -> None:
        self._child(labels).set(value)


class Histogram(_Metric):
    def observe(self, value: float, **labels: str) -> None:
        self._child(labels).observe(value)

    @contextmanager
    def time(self, **labels: str) -> Iterator[None]:
        """Observe the seconds the ``with`` block takes, whether it ends well or raises."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - started, **labels)


class Metrics:
    """The metrics of one service, in a registry of its own (two services in one process,
    as in the tests, never mix their counts)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._declared: dict[str, _Metric] = {}
        self._lock = threading.Lock()
        self._reading = threading.Lock()
        self.requests = self.counter(
            "chroma_http_requests", "HTTP requests answered, by route and status.", REQUEST
        )
        self.request_seconds = self.histogram(
            "chroma_http_request_duration_seconds",
            "Time from a request's arrival to the end of its reply, by route and status.",
            REQUEST,
        )
        self.rows_added = self.counter(
            "chroma_rows_added", "Rows durably stored, by space.", ("space",)
        )

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return self._declare(Counter, prometheus_client.Counter, name, documentation, labels)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        return self._declare(Gauge, prometheus_client.Gauge, name, documentation, labels)

    def histogram(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = DURATION_BUCKETS,
    ) -> Histogram:
        return self._declare(
            Histogram, prometheus_client.Histogram, name, documentation, labels, buckets=buckets
        )

    def _declare(
        self,
        kind: type[M],
        inner: type,
        name: str,
        documentation: str,
        labels: Sequence[str],
        **options: Any,
    ) -> M:
        with self._lock:
            found = self._declared.get(name)
            if found is None:
                made = inner(name, documentation, labels, registry=self.registry, **options)
                found = self._declared[name] = kind(made, labels)
        if not isinstance(found, kind) or found._labels != tuple(labels):
            raise ValueError(f"metric {name!r} is already declared with another kind or labels")
        return found

    def read(self, refresh: Callable[[], None] | None = None) -> bytes:
        """Every metric in the Prometheus text format, after ``refresh()`` has updated the
        gauges of state; one reading at a time, so none sees a gauge half rewritten."""
        with self._reading:
            if refresh is not None:
                refresh()
            return prometheus_client.generate_latest(self.registry)
