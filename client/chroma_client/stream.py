"""``space.stream()``: many small adds from many threads, sent in few large batches.

Producers call :meth:`Stream.add` with anything from one row to a few thousand. Each call is
checked and turned into Arrow in the producer's own thread, then queued; one sender thread
takes what has queued (up to ``max_batch_rows`` rows, waiting at most ``linger`` seconds for
more) and stores it as one batch, in the order the rows were queued. Each call's
:class:`concurrent.futures.Future` is resolved with its ids once the server has
acknowledged its rows, or with the error that kept them out.

- **Back-pressure.** At most ``max_pending_rows`` rows wait; an ``add`` that would go past
  it blocks until the sender has made room, and raises :class:`StreamFull` after its
  ``timeout``. Memory stays bounded whatever the producers do.
- **Retries without duplicates.** Every batch carries a key, the same on every attempt: a
  batch the server stored but whose answer was lost is not stored twice. A batch that
  cannot reach the server is sent again until ``retry_for`` seconds have passed (a server
  restart is waited out), then its rows fail with :class:`~chroma_client.errors.ConnectionFailed`.
- **Order.** Rows are stored in the order their calls were queued, so one producer's rows
  keep their order. A call the server refuses (an id already stored, say) fails alone: a
  batch refused is sent again a call at a time, and the stream goes on.
- **Acknowledgement.** ``future.result()`` waits for one call; :meth:`Stream.flush` waits for
  every call made before it and raises :class:`StreamError` if any of them failed.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from chroma_client import convert
from chroma_client.errors import (
    ChromaError,
    ConnectionFailed,
    DimensionMismatch,
    InvalidInput,
    StreamError,
    StreamFull,
)


class _Space(Protocol):
    """What a stream needs of :class:`~chroma_client.client.Space`."""

    name: str
    client: Any

    def info(self) -> Any: ...


log = logging.getLogger("chroma.stream")

DEFAULT_MAX_BATCH_ROWS = 10_000
DEFAULT_LINGER = 0.005
DEFAULT_MAX_PENDING_ROWS = 200_000
DEFAULT_RETRY_FOR = 60.0
_FIRST_WAIT = 0.05
_MAX_WAIT = 2.0


@dataclass
class _Call:
    """One :meth:`Stream.add`: its future, and how many of its parts are still unsent."""

    future: Future
    ids: list[str]
    parts: int
    error: BaseException | None = None


@dataclass
class _Part:
    """Up to ``max_batch_rows`` rows of one call, as the table the service stores."""

    call: _Call
    table: pa.Table
    queued_at: float = field(default_factory=time.monotonic)


class Stream:
    """Rows added from any number of threads, stored in coalesced batches. Made by
    :meth:`Space.stream <chroma_client.client.Space.stream>`; use it as a context manager
    or :meth:`close` it, which sends what is queued first."""

    def __init__(
        self,
        space: _Space,
        *,
        max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS,
        linger: float = DEFAULT_LINGER,
        max_pending_rows: int = DEFAULT_MAX_PENDING_ROWS,
        retry_for: float = DEFAULT_RETRY_FOR,
    ):
        _check_positive_int("max_batch_rows", max_batch_rows)
        _check_positive_int("max_pending_rows", max_pending_rows)
        _check_seconds("linger", linger, 10.0)
        _check_seconds("retry_for", retry_for, 86_400.0)
        if max_pending_rows < max_batch_rows:
            raise InvalidInput(
                f"max_pending_rows ({max_pending_rows}) must be at least max_batch_rows "
                f"({max_batch_rows})"
            )
        self.space = space
        self.max_batch_rows = max_batch_rows
        self.linger = float(linger)
        self.max_pending_rows = max_pending_rows
        self.retry_for = float(retry_for)
        self._dim = space.info().dim
        self._queue: deque[_Part] = deque()
        self._queued_rows = 0
        self._in_flight_rows = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._closing = False
        self._closed = False
        self._unflushed: list[_Call] = []
        self.acknowledged_rows = 0
        self.failed_rows = 0
        self.batches = 0
        self.retries = 0
        self._sender = threading.Thread(
            target=self._send_loop, name=f"chroma-stream-{space.name}", daemon=True
        )
        self._sender.start()

    def __repr__(self) -> str:
        return f"Stream({self.space.name!r}, pending={self.pending_rows})"

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def pending_rows(self) -> int:
        """Rows added and not yet acknowledged or failed (queued or on their way)."""
        with self._lock:
            return self._queued_rows + self._in_flight_rows

    # --- producers ------------------------------------------------------------
    def add(
        self,
        embeddings,
        *,
        dataset: str,
        context: str = "training",
        input_uris=None,
        inferences=None,
        outputs=None,
        labels=None,
        metadata=None,
        ids=None,
        timeout: float | None = None,
    ) -> Future:
        """Queue rows (the arguments of :meth:`Space.add`); returns a future of their ids,
        resolved once the server has stored them. Bad input raises here, before anything
        is queued. Blocks while the stream holds ``max_pending_rows`` rows, at most
        ``timeout`` seconds (None: until there is room), then raises :class:`StreamFull`."""
        if timeout is not None:
            _check_seconds("timeout", timeout, 86_400.0)
        rows = convert.check_rows(
            embeddings,
            dataset=dataset,
            context=context,
            input_uris=input_uris,
            inferences=inferences,
            outputs=outputs,
            labels=labels,
            metadata=metadata,
            ids=ids,
        )
        self._check_dim(rows.matrix.shape[1])
        spans = list(rows.spans(self.max_batch_rows))
        future: Future = Future()
        call = _Call(future, [], len(spans))
        if not spans:
            future.set_result([])
            return future
        parts = [_Part(call, rows.table(start, stop)) for start, stop in spans]
        for part in parts:
            call.ids.extend(part.table.column("id").to_pylist())
        self._enqueue(parts, len(rows), timeout)
        return future

    def _check_dim(self, dim: int) -> None:
        with self._lock:
            if self._dim is None:
                self._dim = dim
            elif dim != self._dim:
                raise DimensionMismatch(
                    f"embeddings have {dim} dimensions; space {self.space.name!r} holds "
                    f"{self._dim}-dimensional embeddings"
                )

    def _enqueue(self, parts: list[_Part], rows: int, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while True:
                if self._closing:
                    raise InvalidInput("the stream is closed; open another with space.stream()")
                pending = self._queued_rows + self._in_flight_rows
                # a call larger than the whole allowance goes in once the stream is empty
                if pending + rows <= self.max_pending_rows or pending == 0:
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise StreamFull(
                        f"the stream held {pending} rows for {timeout} s, its limit being "
                        f"{self.max_pending_rows} (max_pending_rows); the server is not "
                        "keeping up or cannot be reached"
                    )
                self._changed.wait(left)
            self._queue.extend(parts)
            self._queued_rows += rows
            self._unflushed.append(parts[0].call)
            self._changed.notify_all()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every row added before this call is stored or has failed; raises
        :class:`StreamError` when any of them failed (the first cause chained), and
        ``TimeoutError`` after ``timeout`` seconds."""
        with self._lock:
            calls, self._unflushed = self._unflushed, []
        deadline = None if timeout is None else time.monotonic() + timeout
        failed: list[_Call] = []
        for call in calls:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                call.future.exception(timeout=left)
            except TimeoutError:
                with self._lock:
                    self._unflushed[:0] = calls
                raise TimeoutError(
                    f"rows added to the stream were not all acknowledged within {timeout} s"
                ) from None
            if call.error is not None:
                failed.append(call)
        if failed:
            rows = sum(len(call.ids) for call in failed)
            raise StreamError(
                f"{rows} rows of {len(failed)} add(s) to space {self.space.name!r} were not "
                f"stored: {failed[0].error}",
                failed_rows=rows,
            ) from failed[0].error

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued, wait for it (as :meth:`flush`), and stop the sender. Adds
        after this raise."""
        with self._changed:
            if self._closed:
                return
            self._closing = True
            self._changed.notify_all()
        try:
            self.flush(timeout)
        finally:
            self._sender.join(timeout)
            self._closed = not self._sender.is_alive()

    # --- the sender -------------------------------------------------------------
    def _send_loop(self) -> None:
        while True:
            parts = self._next_batch()
            if parts is None:
                return
            try:
                self._send(parts)
            except BaseException as exc:  # the sender must outlive any one batch
                log.exception("a batch of the stream to %s failed", self.space.name)
                self._settle(parts, exc)

    def _next_batch(self) -> list[_Part] | None:
        """The parts of the next batch, oldest first, once ``linger`` has passed since the
        oldest was queued or ``max_batch_rows`` have queued; None once closed and empty."""
        with self._changed:
            while not self._queue:
                if self._closing:
                    return None
                self._changed.wait()
            wait_until = self._queue[0].queued_at + self.linger
            while self._queued_rows < self.max_batch_rows and not self._closing:
                left = wait_until - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            parts, rows = [self._queue.popleft()], 0
            rows = parts[0].table.num_rows
            while self._queue and rows + self._queue[0].table.num_rows <= self.max_batch_rows:
                part = self._queue.popleft()
                parts.append(part)
                rows += part.table.num_rows
            self._queued_rows -= rows
            self._in_flight_rows += rows
            return parts

    def _send(self, parts: list[_Part]) -> None:
        """Store ``parts``: one batch, or one per run of parts whose columns cannot be
        joined (a call with outputs beside one without), in order."""
        for group in _joinable_runs(parts):
            try:
                self._store(_concat([part.table for part in group]))
            except ConnectionFailed as exc:
                self._settle(group, exc)
            except ChromaError as exc:
                calls = _by_call(group)
                if len(calls) == 1:
                    self._settle(group, exc)
                else:
                    # the service stores a batch whole or not at all: one bad call refused
                    # them all, so each goes again alone and fails alone
                    for own in calls:
                        self._send(own)
            else:
                self._settle(group, None)

    def _store(self, table: pa.Table) -> None:
        """One batch, sent until it is acknowledged, refused, or ``retry_for`` is over; the
        same key on every attempt, so it is stored once."""
        params = {"space": self.space.name, "batch_key": secrets.token_hex(16)}
        transport = self.space.client._transport
        deadline = time.monotonic() + self.retry_for
        wait = _FIRST_WAIT
        while True:
            try:
                transport.call("add", params, table)
                self.batches += 1
                return
            except ConnectionFailed as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ConnectionFailed(
                        f"a batch of {table.num_rows} rows could not reach the server for "
                        f"{self.retry_for} s (retry_for): {exc}"
                    ) from exc
                log.warning("the stream to %s is waiting for the server: %s", self.space.name, exc)
                self.retries += 1
                time.sleep(min(wait, left))
                wait = min(wait * 2, _MAX_WAIT)

    def _settle(self, parts: list[_Part], error: BaseException | None) -> None:
        """The outcome of ``parts``: a call is resolved when its last part is."""
        rows = sum(part.table.num_rows for part in parts)
        done: list[_Call] = []
        with self._changed:
            self._in_flight_rows -= rows
            if error is None:
                self.acknowledged_rows += rows
            else:
                self.failed_rows += rows
            for part in parts:
                call = part.call
                call.parts -= 1
                if error is not None and call.error is None:
                    call.error = error
                if call.parts == 0:
                    done.append(call)
            self._changed.notify_all()
        for call in done:
            if call.error is None:
                call.future.set_result(call.ids)
            else:
                call.future.set_exception(call.error)


def _by_call(parts: list[_Part]) -> list[list[_Part]]:
    """``parts`` grouped by the call they belong to, in the order of each call's first part."""
    calls: dict[int, list[_Part]] = {}
    for part in parts:
        calls.setdefault(id(part.call), []).append(part)
    return list(calls.values())


def _joinable_runs(parts: list[_Part]) -> list[list[_Part]]:
    """``parts`` cut where a part's columns differ from the run before it (ignoring columns
    that are all null, which take any type)."""
    runs: list[list[_Part]] = []
    for part in parts:
        if runs and _joinable(runs[-1][0].table.schema, part.table.schema):
            runs[-1].append(part)
        else:
            runs.append([part])
    return runs


def _joinable(a: pa.Schema, b: pa.Schema) -> bool:
    if a.names != b.names:
        return False
    return all(
        x.type == y.type or pa.types.is_null(x.type) or pa.types.is_null(y.type)
        for x, y in zip(a, b, strict=True)
    )


def _concat(tables: list[pa.Table]) -> pa.Table:
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="permissive").combine_chunks()


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{name} must be a positive integer, got {value!r:.40}")


def _check_seconds(name: str, value, most: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= most:
        raise InvalidInput(
            f"{name} must be a number of seconds from 0 to {most:g}, got {value!r:.40}"
        )
