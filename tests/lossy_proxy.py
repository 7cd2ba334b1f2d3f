"""A TCP proxy in front of a server that loses chosen HTTP exchanges, for retry tests.

Every request is read whole from the client and relayed on a connection of its own to the
server; the server's whole reply is read and relayed back. A rule picks requests by method
and path and says what to lose instead:

- ``"request"``: close the client's connection before anything reaches the server;
- ``"reply"``: relay the request, wait for the server's whole reply, and close the client's
  connection without relaying it (the server did the work, the client never hears of it);
- ``"hold"``: like ``"reply"``, but keep the connection open and silent until the client
  gives up on it (its timeout), then close it.

Stdlib only, one thread per client connection. Plain HTTP/1.1 with ``Content-Length``
bodies, which is what the client and the server speak.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

ACTIONS = ("request", "reply", "hold")
# how long a held reply waits for the client to give up before the proxy closes anyway
HOLD_LIMIT_SECONDS = 30.0


@dataclass
class Rule:
    action: str
    method: str
    path: re.Pattern
    after: int  # matching requests to let through first
    times: int | None  # None: every matching request after those
    then: Callable[[Exchange], None] | None  # called once the part is lost


@dataclass
class Exchange:
    """One request the proxy received, and what became of it (``relayed`` or an action)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    outcome: str = ""


@dataclass
class LossyProxy:
    upstream: tuple[str, int]
    rules: list[Rule] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._sockets: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="lossy-proxy").start()

    @classmethod
    def before(cls, url: str) -> LossyProxy:
        """A proxy in front of the server at ``url`` (``http://host:port``)."""
        host, port = url.removeprefix("http://").rsplit(":", 1)
        return cls((host, int(port)))

    def lose(
        self,
        action: str,
        method: str,
        path: str,
        *,
        after: int = 0,
        times: int | None = 1,
        then: Callable[[Exchange], None] | None = None,
    ) -> None:
        """Of the requests whose method is ``method`` and whose path matches the regular
        expression ``path``, let ``after`` through, then lose the ``action`` part of the next
        ``times`` (every one for None), calling ``then`` with each once it is lost."""
        assert action in ACTIONS, action
        with self._lock:
            self.rules.append(Rule(action, method, re.compile(path), after, times, then))

    def sent(self, method: str, path: str) -> list[Exchange]:
        """The requests received so far with this method and a path matching ``path``."""
        pattern = re.compile(path)
        with self._lock:
            return [e for e in self.exchanges if e.method == method and pattern.search(e.path)]

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for sock in list(self._sockets):
                _close(sock)

    def __enter__(self) -> LossyProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- inside ---------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.add(sock)
        return sock

    def _serve(self, client: socket.socket) -> None:
        self._track(client)
        server = self._track(socket.create_connection(self.upstream))
        client_stream, server_stream = _Stream(client), _Stream(server)
        try:
            while True:
                request = client_stream.message(request=True)
                if request is None:
                    return
                head, body = request
                exchange = _exchange(head, body)
                rule = self._rule(exchange)
                action = rule.action if rule is not None else None
                with self._lock:
                    self.exchanges.append(exchange)
                if action == "request":
                    exchange.outcome = "lost request"
                    self._then(rule, exchange)
                    return
                server.sendall(head + body)
                reply = server_stream.message(request=False)
                if reply is None:
                    return
                if action == "reply":
                    exchange.outcome = "lost reply"
                    self._then(rule, exchange)
                    return
                if action == "hold":
                    exchange.outcome = "held reply"
                    self._then(rule, exchange)
                    client.settimeout(HOLD_LIMIT_SECONDS)
                    try:
                        client.recv(1)  # returns when the client closes, having given up
                    except OSError:
                        pass
                    return
                exchange.outcome = "relayed"
                client.sendall(reply[0] + reply[1])
        except OSError:
            return
        finally:
            for sock in (client, server):
                _close(sock)
                with self._lock:
                    self._sockets.discard(sock)

    def _rule(self, exchange: Exchange) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.method == exchange.method and rule.path.search(exchange.path):
                    if rule.after:
                        rule.after -= 1
                        return None
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times == 0:
                            self.rules.remove(rule)
                    return rule
        return None

    @staticmethod
    def _then(rule: Rule | None, exchange: Exchange) -> None:
        if rule is not None and rule.then is not None:
            rule.then(exchange)


class _Stream:
    """HTTP/1.1 messages read off a socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = bytearray()

    def message(self, *, request: bool) -> tuple[bytes, bytes] | None:
        """(head, body) of the next message, None when the peer closed between messages."""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                return None
            self.buffer += chunk
        end = self.buffer.index(b"\r\n\r\n") + 4
        head = bytes(self.buffer[:end])
        del self.buffer[:end]
        headers = _headers(head)
        assert "chunked" not in headers.get("transfer-encoding", ""), "chunked bodies unsupported"
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                return None
            self.buffer += chunk
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return head, body


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    pairs = (line.split(":", 1) for line in lines if ":" in line)
    return {name.strip().lower(): value.strip() for name, value in pairs}


def _exchange(head: bytes, body: bytes) -> Exchange:
    method, target, _ = head.decode("latin-1").split("\r\n", 1)[0].split(" ", 2)
    return Exchange(method, target.split("?", 1)[0], _headers(head), body)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
