"""The Starlette app: an explicit route table onto :mod:`chroma_core.api` operations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time

import pyarrow as pa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chroma_core import api, auth, explorer
from chroma_core.config import Settings
from chroma_core.monitoring import (
    METRICS_ROUTE,
    RequestMonitor,
    metrics_endpoint,
    request_log,
    route_pattern,
)
from chroma_core.service import Chroma
from chroma_core.shared_memory import SharedMemory, Unreadable
from chroma_wire.errors import (
    ChromaError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ProtocolMismatch,
    RequestTimeout,
    ServerError,
)
from chroma_wire.protocol import (
    ARROW_TYPE,
    JSON_TYPE,
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    ROUTES,
    SHM_HEADER,
    SHM_REPLY_HEADER,
    SHM_ROUTE,
    SHM_UNREADABLE,
    TRANSPORT_HEADER,
    asks_json,
    decode_arrow,
    decode_json_request,
    encode_arrow,
    encode_json,
    encode_json_table,
)

log = logging.getLogger("chroma.server")


def error_response(error: ChromaError, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(
        error.to_json(),
        status_code=error.status,
        headers={PROTOCOL_HEADER: PROTOCOL_VERSION, **(headers or {})},
    )


#: operations whose small calls may run on the event loop itself, without the trip to a
#: worker thread (a thread switch each way, often more than the work of one small query)
INLINE_OPS = frozenset({"nearest_neighbors", "get"})
#: a call is small when its body is at most this many bytes, it has no filter, and it
#: asks for at most ``INLINE_ROWS`` queries or ids...
INLINE_BODY_BYTES = 64 << 10
INLINE_ROWS = 16
#: ...and it runs inline only while the operation's last call took at most this long: a
#: slow answer (an index being loaded, a cold cache) sends the next ones to the workers,
#: so the loop is never held for long
INLINE_SECONDS = 0.005


def endpoint(op: str, chroma: Chroma, numbers: tuple[str, ...] = ()):
    # whether the last call of this operation was quick enough to run the next inline
    quick = [False]

    async def handle(request: Request) -> Response:
        carried = {TRANSPORT_HEADER: "shm" if SHM_HEADER in request.headers else "socket"}
        try:
            auth.check(request.headers.get("authorization"), request.app.state.tokens)
            sent = request.headers.get(PROTOCOL_HEADER)
            if sent is not None and sent != PROTOCOL_VERSION:
                raise ProtocolMismatch(
                    f"the client speaks protocol {sent}, this server speaks {PROTOCOL_VERSION}; "
                    "install matching versions of chroma"
                )
            body = await _body(request, chroma.settings.max_body_bytes)
        except ChromaError as exc:
            return error_response(exc, carried)
        if (
            op in INLINE_OPS
            and quick[0]
            and SHM_HEADER not in request.headers
            and len(body or b"") <= INLINE_BODY_BYTES
        ):
            decoded = _decoded(request, body, numbers, carried)
            if isinstance(decoded, Response):
                return decoded
            params, table = decoded
            if _small(params, table):
                started = time.perf_counter()
                try:
                    return _answer(op, chroma, request, params, table, carried)
                finally:
                    quick[0] = time.perf_counter() - started <= INLINE_SECONDS
            return await run_in_threadpool(_answer, op, chroma, request, params, table, carried)
        # decoding, the operation and encoding take one trip to a worker thread: each trip
        # costs a thread switch, which is most of a small query's time on a busy machine
        started = time.perf_counter()
        try:
            return await run_in_threadpool(_serve, op, chroma, request, body, carried, numbers)
        finally:
            quick[0] = time.perf_counter() - started <= INLINE_SECONDS

    return handle


def _small(params: dict, table) -> bool:
    if params.get("where") is not None:
        return False
    ids = params.get("ids")
    if ids is not None and (not isinstance(ids, list) or len(ids) > INLINE_ROWS):
        return False
    return table is None or table.num_rows <= INLINE_ROWS


def _decoded(
    request: Request, body: bytes | None, numbers, carried: dict
) -> tuple[dict, pa.Table | None] | Response:
    """The parameters and table of a request, or the error response that refuses it."""
    try:
        params, table = _decode(request, body)
        params.update(request.query_params)
        params.update(request.path_params)
        for name in numbers:
            # whatever the path holds reaches the operation, which names what is wrong
            if re.fullmatch(r"-?[0-9]{1,30}", params[name]):
                params[name] = int(params[name])
    except Unreadable as exc:
        return error_response(exc, {**carried, SHM_HEADER: SHM_UNREADABLE})
    except ChromaError as exc:
        return error_response(exc, carried)
    return params, table


def _serve(op, chroma: Chroma, request: Request, body: bytes | None, carried: dict, numbers=()):
    decoded = _decoded(request, body, numbers, carried)
    if isinstance(decoded, Response):
        return decoded
    params, table = decoded
    return _answer(op, chroma, request, params, table, carried)


def _answer(op, chroma: Chroma, request: Request, params: dict, table, carried: dict):
    try:
        result, out = api.call(chroma, op, params, table)
        # for the request log: the rows a request sent (an add), else the rows its reply carries
        rows = table if table is not None else out
        request.state.rows = None if rows is None else rows.num_rows
    except ChromaError as exc:
        return error_response(exc, carried)
    except Exception:
        log.exception("operation %s failed", op)
        return error_response(ServerError(f"internal error in {op}; see the server log"), carried)
    headers = {PROTOCOL_HEADER: PROTOCOL_VERSION, **carried}
    if out is not None and asks_json(request.headers.get("accept")):
        return Response(encode_json_table(result, out), media_type=JSON_TYPE, headers=headers)
    shared: SharedMemory | None = request.app.state.shared_memory
    if out is not None and shared and shared.accepts_reply(request.headers.get(SHM_REPLY_HEADER)):
        name = shared.write_reply(result, out)
        if name is not None:
            headers[SHM_REPLY_HEADER] = name
            return Response(b"", media_type=ARROW_TYPE, headers=headers)
    if out is not None:
        return Response(encode_arrow(result, out), media_type=ARROW_TYPE, headers=headers)
    return Response(encode_json(result), media_type="application/json", headers=headers)


async def _body(request: Request, limit: int) -> bytes | None:
    """The request body, within ``limit``; None when there is none to read (a GET, or a
    request whose table waits in shared memory)."""
    if request.method in ("GET", "DELETE") or SHM_HEADER in request.headers:
        return None
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body has {declared} bytes, more than the limit of {limit}")
    chunks, size = [], 0
    seconds = request.app.state.chroma.settings.client_timeout_seconds
    parts = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(parts.__anext__(), seconds)
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise RequestTimeout(
                f"the body stopped arriving: nothing for {seconds:g} s after {size} bytes "
                "(CHROMA_CLIENT_TIMEOUT_SECONDS)"
            ) from None
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(request: Request, body: bytes | None):
    if request.method in ("GET", "DELETE"):
        return {}, None
    name = request.headers.get(SHM_HEADER)
    if name is not None:
        shared: SharedMemory | None = request.app.state.shared_memory
        if shared is None:
            raise Unreadable("this server does not take requests through shared memory")
        return shared.read(name)
    if request.headers.get("content-type", "").startswith(ARROW_TYPE):
        return decode_arrow(body or b"", request.app.state.chroma.settings.max_body_bytes)
    return decode_json_request(body or b"")


async def no_route(request: Request, exc: Exception) -> Response:
    """A path or method no route takes, answered as the typed errors every route gives."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(
            MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}"),
            dict(exc.headers or {}),
        )
    if exc.status_code == 404:
        return error_response(NotFound(f"no operation at {request.url.path}"))
    return JSONResponse({"error": "HTTPException", "detail": exc.detail}, exc.status_code)


def _route(method: str, path: str, op: str, service: Chroma) -> Route:
    """The route of one operation. Integer path parameters take any text (``{x:int}``
    would answer a bad one with "no route"), for the operation to say what is wrong; a
    ``:path`` parameter takes text with '/' in it."""
    numbers = tuple(re.findall(r"\{(\w+):int\}", path))
    return Route(route_pattern(path), endpoint(op, service, numbers), methods=[method])


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def shared_memory_offer(request: Request) -> Response:
    """Where a client on this machine may put requests, or ``{"directory": null}``."""
    try:
        auth.check(request.headers.get("authorization"), request.app.state.tokens)
    except ChromaError as exc:
        return error_response(exc)
    shared: SharedMemory | None = request.app.state.shared_memory
    offer = shared.offer() if shared is not None else {"directory": None}
    return JSONResponse(offer, headers={PROTOCOL_HEADER: PROTOCOL_VERSION})


def create_app(settings: Settings | None = None, chroma: Chroma | None = None) -> Starlette:
    """The web app over ``chroma`` (or a new service from ``settings``)."""
    settings = chroma.settings if chroma is not None else settings or Settings.from_env()
    # a token file that cannot be read stops the start before the store is opened
    tokens = auth.tokens(settings)
    service = chroma or Chroma(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        app.state.shared_memory = SharedMemory.start(service.settings)
        try:
            yield
        finally:
            if app.state.shared_memory is not None:
                app.state.shared_memory.close()
                app.state.shared_memory = None
            await run_in_threadpool(service.close)

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route(SHM_ROUTE, shared_memory_offer, methods=["GET"]),
        Route(METRICS_ROUTE, metrics_endpoint, methods=["GET"]),
    ]
    routes += [_route(method, path, op, service) for method, path, op in ROUTES]
    routes += explorer.routes()
    monitor = Middleware(RequestMonitor, chroma=service, log=request_log(settings.log_requests))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[monitor],
        exception_handlers={HTTPException: no_route},
    )
    app.state.chroma = service
    app.state.tokens = tokens
    app.state.shared_memory = None
    return app
