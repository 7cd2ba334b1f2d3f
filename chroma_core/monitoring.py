"""What operators watch: ``GET /metrics`` and one log line per request.

Every request is counted and timed by route (the operation's name, such as ``add``, or the
path of a route that is not an operation, such as ``/healthz``) and status. With
``CHROMA_LOG_REQUESTS=1`` (``--log-requests``) each request also writes one JSON line to
stderr: time, method, path, route, status, duration_ms, rows (sent in an add, or returned
in a table), client address and, for a request that failed, its error and why.

No log line ever holds a secret: the request log writes the path without its query, and
uvicorn's access lines (written when the request log is off) have the values of query
parameters that may carry one (``token``, ``key``, ``secret``, ``password``, ``auth``...)
replaced by ``***`` (:class:`HideSecrets`).

``/metrics`` follows the rule of the data routes: open without tokens configured, wanting a
bearer token with them, since its labels name the spaces.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from datetime import UTC, datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chroma_core import auth
from chroma_core.metrics import CONTENT_TYPE
from chroma_core.service import Chroma
from chroma_wire.errors import ChromaError
from chroma_wire.protocol import PROTOCOL_HEADER, PROTOCOL_VERSION, ROUTES

METRICS_ROUTE = "/metrics"
REQUEST_LOG = "chroma.requests"


def route_pattern(path: str) -> str:
    """The pattern an operation's route is served under: integer path parameters take any
    text (``{x:int}`` would answer a bad one with "no route"), for the operation to say
    what is wrong."""
    return re.sub(r"\{(\w+):int\}", r"{\1:path}", path)


_OPERATIONS = {(method, route_pattern(path)): op for method, path, op in ROUTES}
# the most of a failed response's body read for the reason it gives
_ERROR_BODY_BYTES = 4096
#: query parameters whose value is never logged
SECRET_PARAMETER = re.compile(
    r"(?i)([?&][^=&#]*(?:token|key|secret|password|passwd|auth|credential|session)[^=&#]*=)"
    r"[^&#\s]*"
)


class RequestMonitor:
    """ASGI middleware: counts and times every HTTP request, and logs it when asked."""

    def __init__(self, app, chroma: Chroma, log: logging.Logger | None = None):
        self.app = app
        self.metrics = chroma.metrics
        self.log = log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # the endpoint leaves the rows it handled here (Request.state writes to this dict)
        state = scope.setdefault("state", {})
        status = 500
        error_body = bytearray()

        async def send_and_watch(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status >= 400:
                room = _ERROR_BODY_BYTES - len(error_body)
                error_body.extend(message.get("body", b"")[: max(room, 0)])
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            seconds = time.perf_counter() - started
            route = route_label(scope)
            self.metrics.requests.inc(route=route, status=str(status))
            self.metrics.request_seconds.observe(seconds, route=route, status=str(status))
            if self.log is not None:
                line = _log_line(scope, route, status, seconds, state.get("rows"), error_body)
                self.log.info(line)


def route_label(scope) -> str:
    """The operation's name, the route's path, or ``unmatched``: never the raw path, whose
    space names and ids would make a label value per request."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return "unmatched"
    # a mount at the root has the empty path
    return _OPERATIONS.get((scope.get("method"), path), path) or "/"


def _log_line(scope, route: str, status: int, seconds: float, rows, error_body: bytes = b"") -> str:
    client = scope.get("client")
    line = {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "method": scope.get("method"),
        "path": scope.get("path"),
        "route": route,
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "rows": rows,
        "client": f"{client[0]}:{client[1]}" if client else None,
    }
    if status >= 400:
        line["error"], line["detail"] = _reason(bytes(error_body), status)
    return json.dumps(line)


def _reason(body: bytes, status: int) -> tuple[str, str]:
    """The error a failed response names and its detail, from its JSON body; otherwise the
    body's start as text."""
    try:
        found = json.loads(body)
        if isinstance(found, dict) and "error" in found:
            return str(found["error"]), str(found.get("detail", ""))[:1000]
    except ValueError:
        pass
    text = body.decode("utf-8", errors="replace").strip()[:1000]
    return f"HTTP {status}", text


class HideSecrets(logging.Filter):
    """Replaces the values of secret-looking query parameters in uvicorn's access lines
    (whose third argument is the path with its query) with ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], hide_secrets(args[2]), *args[3:])
        elif isinstance(record.msg, str):
            record.msg = hide_secrets(record.msg)
        return True


def hide_secrets(text: str) -> str:
    """``text`` with the values of secret-looking query parameters replaced by ``***``."""
    return SECRET_PARAMETER.sub(r"\1***", text)


def request_log(enabled: bool) -> logging.Logger | None:
    """The logger of request lines (JSON alone on each line, to stderr), or None when off."""
    if not enabled:
        return None
    log = logging.getLogger(REQUEST_LOG)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        # the lines stand alone, without the prefix the root logger would add
        log.propagate = False
    return log


async def metrics_endpoint(request: Request) -> Response:
    try:
        auth.check(request.headers.get("authorization"), request.app.state.tokens)
    except ChromaError as exc:
        return JSONResponse(
            exc.to_json(), status_code=exc.status, headers={PROTOCOL_HEADER: PROTOCOL_VERSION}
        )
    chroma: Chroma = request.app.state.chroma
    body = await run_in_threadpool(chroma.metrics.read, lambda: refresh(chroma))
    return Response(body, media_type=CONTENT_TYPE)


def refresh(chroma: Chroma) -> None:
    """Bring the gauges of state up to date: rows per space, and what plugins report."""
    rows = chroma.metrics.gauge("chroma_space_rows", "Rows stored, by space.", ("space",))
    rows.clear()
    for info in chroma.spaces():
        rows.set(info.count or 0, space=info.name)
    chroma.hook.chroma_metrics(context=chroma.context)
