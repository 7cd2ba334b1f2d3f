"""Clients that stop sending or stop reading: each gets ``client_timeout_seconds``, then its
connection is dropped, so no client can hold a server's connections or memory for long.

- :class:`TimedH11Protocol` is uvicorn's HTTP/1.1 protocol with a deadline for the head of
  every request: from the moment a connection is made, or a reply has been sent on it,
  the next request's line and headers must be in within the timeout, or the connection is
  closed. (uvicorn alone waits for a head forever, and closes only connections idle
  between two requests.)
- :class:`SlowReaders` is ASGI middleware that sends a reply's body in pieces of
  ``PIECE_BYTES``, waiting at most the timeout for each to be taken; a client that stops
  reading is dropped and the reply is freed, rather than being held in memory until it
  reads again.
- A request's body must keep arriving: the app waits at most the timeout for each part
  (``chroma_core.app``).

The number of connections is capped by uvicorn (``limit_concurrency``): beyond
``max_connections`` a new connection is answered 503.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("chroma.server")

#: a reply's body goes out in pieces of this size, each waited for at most the timeout
PIECE_BYTES = 1 << 20


class TimedH11Protocol(H11Protocol):
    """HTTP/1.1 with a deadline for each request's head; ``head_seconds`` is set on the
    class by :func:`protocol_with_deadline`."""

    head_seconds = 30.0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._served: object | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not None and self.cycle is not self._served:
            # a whole head came in: its request is under way
            self._served = self.cycle
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.head_seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being served: its own limits apply
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.info(
            "closing the connection of %s: no request head within %.0f s",
            client,
            self.head_seconds,
        )
        self.transport.close()


def protocol_with_deadline(seconds: float) -> type[TimedH11Protocol]:
    """:class:`TimedH11Protocol` with heads due within ``seconds``."""
    return type("TimedH11Protocol", (TimedH11Protocol,), {"head_seconds": seconds})


class SlowReaders:
    """ASGI middleware: a reply body goes out a piece at a time, each piece taken within
    ``seconds`` or the client is dropped."""

    def __init__(self, app, seconds: float):
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        dropped = False

        async def paced(message):
            nonlocal dropped
            if dropped:
                return
            if message["type"] != "http.response.body":
                return await send(message)
            body = message.get("body", b"")
            more = message.get("more_body", False)
            # one piece cut at a time: the reply is never held twice
            for start in range(0, max(len(body), 1), PIECE_BYTES):
                last = start + PIECE_BYTES >= len(body)
                piece = body[start : start + PIECE_BYTES]
                try:
                    await asyncio.wait_for(
                        send({"type": "http.response.body", "body": piece,
                              "more_body": more or not last}),
                        self.seconds,
                    )  # fmt: skip
                except TimeoutError:
                    dropped = True
                    client = scope.get("client")
                    log.warning(
                        "dropping %s: it took none of its reply for %.0f s (%d of %d bytes sent)",
                        f"{client[0]}:{client[1]}" if client else "a client",
                        self.seconds,
                        start,
                        len(body),
                    )
                    raise ClientStoppedReading from None

        try:
            await self.app(scope, receive, paced)
        except ClientStoppedReading:
            pass  # uvicorn closes the connection: the response never completed


class ClientStoppedReading(Exception):
    """A client took no part of its reply within the timeout."""
