"""How a client reaches the service: in-process, or over HTTP with the Arrow protocol."""

from __future__ import annotations

import os
import random
import re
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyarrow as pa

from chroma_client import shared_memory as shared_memory_module
from chroma_client.errors import ConnectionFailed, ProtocolMismatch, RetriesExhausted, ServerError
from chroma_wire import protocol
from chroma_wire.checks import check_nesting, check_space_name
from chroma_wire.errors import from_json
from chroma_wire.operations import BY_NAME, may_resend

Reply = tuple[dict, pa.Table | None]

# failures before the request left: any request may be sent again
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# failures after it may have arrived and been carried out, its reply lost
_MAYBE_SENT = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    httpx.CloseError,
)
DEFAULT_RETRIES = 3
DEFAULT_RETRY_BACKOFF = 0.2
_MAX_DELAY = 10.0


class Embedded:
    """Runs the service in this process on the configured store (SQLite by default)."""

    def __init__(self, path: str | os.PathLike | None = None, store: str | None = None):
        # the server package is loaded only here: a client of a server never imports it
        try:
            from chroma_core import api
            from chroma_core.config import Settings
            from chroma_core.service import Chroma
        except ImportError as exc:
            raise ImportError(
                "Client() without a url runs Chroma in this process, which needs the server "
                "package `chroma` installed beside the client; or pass the url of a Chroma "
                f"server, Client('http://host:8000') ({exc})"
            ) from exc
        settings = Settings.from_env(path=Path(path) if path is not None else None, store=store)
        self.chroma = Chroma(settings)
        self._call = api.call
        self.location = str(settings.path.resolve())

    def call(self, op: str, params: dict, table: pa.Table | None = None) -> Reply:
        return self._call(self.chroma, op, params, table)

    def prepare(self, op: str, params: dict, table: pa.Table | None = None) -> Outgoing:
        """A call made ready to :meth:`send` (in process, nothing to encode)."""
        return Outgoing(op, params, table)

    def send(self, outgoing: Outgoing) -> Reply:
        return self.call(outgoing.op, outgoing.params, outgoing.table)

    def close(self) -> None:
        self.chroma.close()


@dataclass
class Outgoing:
    """A call encoded and ready to send; :meth:`discard` it if it will not be sent."""

    op: str
    params: dict
    table: pa.Table | None
    request: httpx.Request | None = None
    file: str | None = None  # the shared-memory file holding the request body

    def discard(self) -> None:
        if self.file is not None:
            shared_memory_module.remove(self.file)
            self.file = None


class Http:
    """Talks to a Chroma server; checks the protocol version on first use.

    Large Arrow requests and replies go through shared memory when the server is on this
    machine and ``shared_memory`` (default: ``CHROMA_SHARED_MEMORY``, on) allows it;
    ``carried`` counts requests by the transport the server says carried them (``shm`` or
    ``socket``) and replies that came through shared memory (``shm reply``).

    A request that fails on the way (no connection, a timeout, a connection dropped before
    the reply) is sent again, the same bytes each time, up to ``retries`` more times with
    exponential backoff from ``retry_backoff`` seconds, when that is safe: always if it
    never left, otherwise only when :func:`chroma_wire.operations.may_resend` allows it:
    operations declared safe to send twice, and adds, which carry a batch key the server
    recognises when the batch arrives twice. Then
    :class:`~chroma_client.errors.RetriesExhausted` says how many attempts were made."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 300.0,
        token: str | None = None,
        shared_memory: bool | None = None,
        retries: int = DEFAULT_RETRIES,
        retry_backoff: float = DEFAULT_RETRY_BACKOFF,
    ):
        self.location = url.rstrip("/")
        self.retries = retries
        self.retry_backoff = retry_backoff
        headers = {protocol.PROTOCOL_HEADER: protocol.PROTOCOL_VERSION}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.location, timeout=timeout, headers=headers)
        self._checked = False
        self._lock = threading.Lock()
        self._shm_wanted = shared_memory_module.wanted(shared_memory)
        self._shm: shared_memory_module.SharedMemory | None = None
        self._shm_requests = True  # off once the server says it cannot open our files
        self.carried: Counter[str] = Counter()
        self._carried_lock = threading.Lock()

    @property
    def shared_memory(self) -> shared_memory_module.SharedMemory | None:
        """The directory shared with the server, or None when everything uses the socket."""
        return self._shm

    def call(self, op: str, params: dict, table: pa.Table | None = None) -> Reply:
        return self.send(self.prepare(op, params, table))

    def prepare(self, op: str, params: dict, table: pa.Table | None = None) -> Outgoing:
        """Encode a call: a large table goes to a shared-memory file when the server shares
        this machine's memory, otherwise into the request body."""
        if not self._checked:
            self._check_version()
        if op in ("add", "upsert", "update") and not params.get("batch_key"):
            # one key per batch, made once: every attempt to send the batch carries it
            params = {**params, "batch_key": secrets.token_hex(16)}
        outgoing = Outgoing(op, params, table)
        shm = self._shm if self._shm_requests else None
        if shm is not None and table is not None and table.nbytes >= shared_memory_module.MIN_BYTES:
            outgoing.file = shm.write(params, table)
        outgoing.request = self._request(outgoing)
        return outgoing

    def send(self, outgoing: Outgoing) -> Reply:
        """Send a prepared call and read its reply; its shared-memory file is removed."""
        assert outgoing.request is not None
        through_file = outgoing.file is not None
        repeatable = may_resend(outgoing.op, outgoing.params)
        try:
            # every attempt names the same file: the server only maps it, read-only, and it
            # stays until the last attempt is over
            response = self._exchange(outgoing.request, outgoing.op, repeatable)
        finally:
            outgoing.discard()
        if through_file and response.headers.get(protocol.SHM_HEADER) == protocol.SHM_UNREADABLE:
            # the server cannot open our files: this request and the next go on the socket
            self._shm_requests = False
            response = self._exchange(self._request(outgoing), outgoing.op, repeatable)
        return self._reply(response, outgoing.op)

    def _check_version(self) -> None:
        with self._lock:
            if self._checked:
                return
            info, _ = self.send(Outgoing("version", {}, None, self._request_of("version", {})))
            if str(info.get("protocol")) != protocol.PROTOCOL_VERSION:
                raise ProtocolMismatch(
                    f"the server at {self.location} speaks protocol {info.get('protocol')}, "
                    f"this client speaks {protocol.PROTOCOL_VERSION}; install matching versions "
                    "of chroma"
                )
            if self._shm_wanted:
                self._shm = shared_memory_module.negotiate(self._http)
            self._checked = True

    def _request(self, outgoing: Outgoing) -> httpx.Request:
        return self._request_of(outgoing.op, outgoing.params, outgoing.table, outgoing.file)

    def _request_of(
        self, op: str, params: dict, table: pa.Table | None = None, file: str | None = None
    ) -> httpx.Request:
        method, template = BY_NAME[op].method, BY_NAME[op].path
        # refused here as the service would refuse them, before they can break a URL or JSON
        check_nesting(params)
        if "{space}" in template:
            check_space_name(params.get("space"))
        params = dict(params)
        path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: _path_part(params.pop(m.group(1))), template)
        headers = (
            {protocol.SHM_REPLY_HEADER: f"{protocol.SHM_REPLY_ACCEPT} {self._shm.reply_key}"}
            if self._shm is not None and self._shm.reply_key
            else {}
        )
        if method == "GET" or method == "DELETE":
            query = {k: v for k, v in params.items() if v is not None}
            return self._http.build_request(method, path, params=query, headers=headers)
        if file is not None:
            headers.update(
                {"Content-Type": protocol.ARROW_TYPE, protocol.SHM_HEADER: os.path.basename(file)}
            )
            return self._http.build_request(method, path, headers=headers)
        if table is not None:
            headers["Content-Type"] = protocol.ARROW_TYPE
            content = protocol.encode_arrow(params, table)
        else:
            headers["Content-Type"] = protocol.JSON_TYPE
            content = protocol.encode_json(params)
        return self._http.build_request(method, path, content=content, headers=headers)

    def _exchange(self, request: httpx.Request, op: str, repeatable: bool) -> httpx.Response:
        """The response to ``request``, sent again after a failure on the way when that is
        safe (``repeatable``: the server may receive it twice) and retries are left."""
        attempts = 0
        while True:
            attempts += 1
            try:
                return self._http.send(request)
            except httpx.TransportError as exc:
                error = exc
            problem = self._problem(op, error)
            if not isinstance(error, _NOT_SENT + _MAYBE_SENT):
                raise ConnectionFailed(problem) from None
            if not repeatable and not isinstance(error, _NOT_SENT):
                raise ConnectionFailed(
                    f"{problem}; {op} was not sent again, since the server may have carried "
                    "it out: check before repeating it"
                ) from None
            if attempts > self.retries:
                raise RetriesExhausted(
                    f"{problem}; gave up after {attempts} attempt{'s' if attempts > 1 else ''}",
                    attempts,
                ) from None
            delay = min(self.retry_backoff * 2 ** (attempts - 1), _MAX_DELAY)
            # spread out, so clients that lost the server at once do not return at once
            time.sleep(delay * random.uniform(0.5, 1.0))

    def _problem(self, op: str, error: httpx.TransportError) -> str:
        what = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if isinstance(error, _NOT_SENT) or not isinstance(error, _MAYBE_SENT):
            return f"cannot reach the Chroma server at {self.location} for {op} ({what})"
        if isinstance(error, httpx.TimeoutException):
            return f"{self.location} did not answer {op} in time ({what})"
        return f"the connection to {self.location} broke during {op} ({what})"

    def _reply(self, response: httpx.Response, op: str) -> Reply:
        carrier = response.headers.get(protocol.TRANSPORT_HEADER)
        reply_file = response.headers.get(protocol.SHM_REPLY_HEADER)
        with self._carried_lock:
            if carrier:
                self.carried[carrier] += 1
            if reply_file:
                self.carried["shm reply"] += 1
        if reply_file and response.status_code < 400:
            if self._shm is None:
                raise ServerError(f"{op}: the server replied through shared memory unasked")
            return self._shm.read_reply(reply_file)
        return _reply(response, op)

    def close(self) -> None:
        self._http.close()


def _path_part(value) -> str:
    from urllib.parse import quote

    return quote(str(value), safe="")


def _reply(response: httpx.Response, op: str) -> Reply:
    content_type = response.headers.get("content-type", "")
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            raise ServerError(
                f"{op} failed with HTTP {response.status_code}: {response.text[:200]}"
            ) from None
        raise from_json(body)
    if content_type.startswith(protocol.ARROW_TYPE):
        return protocol.decode_arrow(response.content)
    return protocol.decode_json(response.content), None
