"""How a client reaches the service: in-process, or over HTTP with the Arrow protocol."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import httpx
import pyarrow as pa

from chroma_client.errors import ConnectionFailed, ProtocolMismatch, ServerError
from chroma_core import api
from chroma_core.config import Settings
from chroma_core.errors import from_json
from chroma_core.protocol import (
    ARROW_TYPE,
    JSON_TYPE,
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    ROUTES,
    decode_arrow,
    decode_json,
    encode_arrow,
    encode_json,
)

Reply = tuple[dict, pa.Table | None]


class Embedded:
    """Runs the service in this process on the configured store (SQLite by default)."""

    def __init__(self, path: str | os.PathLike | None = None, store: str | None = None):
        from chroma_core.service import Chroma

        settings = Settings.from_env(path=Path(path) if path is not None else None, store=store)
        self.chroma = Chroma(settings)
        self.location = str(settings.path.resolve())

    def call(self, op: str, params: dict, table: pa.Table | None = None) -> Reply:
        return api.call(self.chroma, op, params, table)

    def close(self) -> None:
        self.chroma.close()


class Http:
    """Talks to a Chroma server; checks the protocol version on first use."""

    def __init__(self, url: str, *, timeout: float = 300.0, token: str | None = None):
        self.location = url.rstrip("/")
        headers = {PROTOCOL_HEADER: PROTOCOL_VERSION}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.location, timeout=timeout, headers=headers)
        self._routes = {op: (method, path) for method, path, op in ROUTES}
        self._checked = False
        self._lock = threading.Lock()

    def call(self, op: str, params: dict, table: pa.Table | None = None) -> Reply:
        if not self._checked:
            self._check_version()
        return self._send(op, params, table)

    def _check_version(self) -> None:
        with self._lock:
            if self._checked:
                return
            info, _ = self._send("version", {}, None)
            if str(info.get("protocol")) != PROTOCOL_VERSION:
                raise ProtocolMismatch(
                    f"the server at {self.location} speaks protocol {info.get('protocol')}, "
                    f"this client speaks {PROTOCOL_VERSION}; install matching versions of chroma"
                )
            self._checked = True

    def _send(self, op: str, params: dict, table: pa.Table | None) -> Reply:
        method, template = self._routes[op]
        params = dict(params)
        path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: _path_part(params.pop(m.group(1))), template)
        if method == "GET" or method == "DELETE":
            query = {k: v for k, v in params.items() if v is not None}
            request = self._http.build_request(method, path, params=query)
        elif table is not None:
            request = self._http.build_request(
                method,
                path,
                content=encode_arrow(params, table),
                headers={"Content-Type": ARROW_TYPE},
            )
        else:
            request = self._http.build_request(
                method, path, content=encode_json(params), headers={"Content-Type": JSON_TYPE}
            )
        try:
            response = self._http.send(request)
        except httpx.TimeoutException as exc:
            raise ConnectionFailed(f"{self.location} did not answer {op} in time: {exc}") from None
        except httpx.TransportError as exc:
            raise ConnectionFailed(
                f"cannot reach the Chroma server at {self.location}: {exc}"
            ) from None
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
    if content_type.startswith(ARROW_TYPE):
        return decode_arrow(response.content)
    return decode_json(response.content), None
