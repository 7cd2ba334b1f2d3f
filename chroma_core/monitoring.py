"""What operators watch: ``GET /metrics`` and one log line per request.

Every request is counted and timed by route (the operation's name, such as ``add``, or the
path of a route that is not an operation, such as ``/healthz``) and status. With
``CHROMA_LOG_REQUESTS=1`` (``--log-requests``) each request also writes one JSON line to
stderr: time, method, path, route, status, duration_ms, rows (sent in an add, or returned
in a table) and client address.

``/metrics`` follows the rule of the data routes: open without tokens configured, wanting a
bearer token with them, since its labels name the spaces.
"""

from __future__ import annotations

import json
import logging
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

_OPERATIONS = {(method, path): op for method, path, op in ROUTES}


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

        async def send_and_watch(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            seconds = time.perf_counter() - started
            route = route_label(scope)
            self.metrics.requests.inc(route=route, status=str(status))
            self.metrics.request_seconds.observe(seconds, route=route, status=str(status))
            if self.log is not None:
                self.log.info(_log_line(scope, route, status, seconds, state.get("rows")))


def route_label(scope) -> str:
    """The operation's name, the route's path, or ``unmatched``: never the raw path, whose
    space names and ids would make a label value per request."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return "unmatched"
    # a mount at the root has the empty path
    return _OPERATIONS.get((scope.get("method"), path), path) or "/"


def _log_line(scope, route: str, status: int, seconds: float, rows) -> str:
    client = scope.get("client")
    return json.dumps(
        {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "method": scope.get("method"),
            "path": scope.get("path"),
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "rows": rows,
            "client": f"{client[0]}:{client[1]}" if client else None,
        }
    )


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
