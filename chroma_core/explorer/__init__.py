"""The embedding explorer: a page served at ``/`` and the few routes it reads besides the API.

The page is plain HTML, ES modules and CSS under ``static/``, shipped as package data. It
calls the same operations as the client (asking for JSON: see
:func:`chroma_wire.protocol.asks_json`), plus three routes of its own:

- ``GET /api/v1/explorer``: which maps are installed (algorithms named ``projection`` or
  ``projection_<method>``) and whether the server shows local image files;
- ``GET /api/v1/explorer/spaces/{space}/map``: a map run through the algorithm dispatch,
  with each point's priority, packed for the browser (:func:`encode_map`);
- ``GET /api/v1/explorer/file?path=...``: an image under ``CHROMA_EXPLORER_FILES``.

The page itself is open; its data routes want the bearer token when tokens are configured.
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from chroma_core import auth, filters
from chroma_core.explorer.files import read_image
from chroma_core.service import Chroma
from chroma_wire import checks
from chroma_wire.errors import ChromaError, InvalidInput, ServerError

log = logging.getLogger("chroma.explorer")

STATIC = Path(__file__).parent / "static"
MAP_TYPE = "application/vnd.chroma.map"
#: the catalogue fields a map carries as category codes
CATEGORIES = ("dataset", "context", "label", "inference")


def is_projection(name: str) -> bool:
    """Whether algorithm ``name`` draws a map: ``projection`` or ``projection_<method>``."""
    return name == "projection" or name.startswith("projection_")


def routes() -> list:
    return [
        Route("/", page, methods=["GET"]),
        Mount("/explorer", StaticFiles(directory=STATIC), name="explorer"),
        Route("/api/v1/explorer", _guarded(overview), methods=["GET"]),
        Route("/api/v1/explorer/spaces/{space}/map", _guarded(space_map), methods=["GET"]),
        Route("/api/v1/explorer/file", _guarded(image_file), methods=["GET"]),
    ]


async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def _guarded(work):
    """An endpoint that checks the token, then runs ``work(chroma, params)`` on a thread."""

    async def handle(request: Request) -> Response:
        try:
            auth.check(request.headers.get("authorization"), request.app.state.tokens)
            params = {**request.query_params, **request.path_params}
            return await run_in_threadpool(work, request.app.state.chroma, params)
        except ChromaError as exc:
            return JSONResponse(exc.to_json(), status_code=exc.status)
        except Exception:
            log.exception("explorer request %s failed", request.url.path)
            error = ServerError("internal error in the explorer; see the server log")
            return JSONResponse(error.to_json(), status_code=error.status)

    return handle


def overview(chroma: Chroma, params: dict) -> Response:
    maps = [a for a in chroma.algorithms() if is_projection(a["name"])]
    return JSONResponse({"maps": maps, "files": bool(chroma.settings.explorer_files)})


def space_map(chroma: Chroma, params: dict) -> Response:
    algorithm = params.get("algorithm", "projection")
    if not is_projection(algorithm):
        raise InvalidInput(
            f"algorithm {algorithm!r:.80} is not a map: name one called projection or "
            "projection_<method>"
        )
    options = {name: checks.int_text(name, params.get(name)) for name in ("sample", "seed")}
    given = {name: value for name, value in options.items() if value is not None}
    result = chroma.run(params["space"], algorithm, given)
    ids = result.table.column("id")
    # only the mapped points' scores, where the filter can name them all
    where = {"id": {"$in": ids.to_pylist()}} if len(ids) <= filters.MAX_IN_VALUES else None
    scored = chroma.priorities(params["space"], n=None, where=where)
    return Response(
        encode_map(result.table, result.meta, scored),
        media_type=MAP_TYPE,
        headers={"Cache-Control": "no-store"},
    )


def image_file(chroma: Chroma, params: dict) -> Response:
    content, media_type = read_image(params.get("path", ""), chroma.settings.explorer_files)
    return Response(
        content,
        media_type=media_type,
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=300"},
    )


def encode_map(table: pa.Table, meta: dict, scored: pa.Table) -> bytes:
    """A map packed for the browser: a little-endian uint32 length, the JSON header padded
    with spaces so the arrays after it start at a multiple of 4 bytes, then float32 ``x``,
    ``y`` and ``priority`` (NaN where unscored) and one int32 code array per field of
    ``CATEGORIES`` (-1 where null).

    The header holds ``count``, the algorithm's ``meta``, ``categories`` (each field's
    values, which the codes index), ``ids``, ``input_uris`` and ``priority`` (how many
    points are scored, and their range)."""
    n = table.num_rows
    arrays = [
        table.column("x").to_numpy().astype("<f4"),
        table.column("y").to_numpy().astype("<f4"),
    ]
    where = pc.index_in(table.column("id"), value_set=scored.column("id").combine_chunks())
    found = where.is_valid().to_numpy(zero_copy_only=False)
    priority = np.full(n, np.nan, dtype="<f4")
    if n and found.any():
        at = where.to_numpy(zero_copy_only=False)[found].astype(np.int64)
        priority[found] = scored.column("priority").to_numpy()[at]
    arrays.append(priority)
    categories = {}
    for name in CATEGORIES:
        encoded = pc.dictionary_encode(table.column(name)).combine_chunks()
        categories[name] = encoded.dictionary.to_pylist()
        arrays.append(encoded.indices.fill_null(-1).to_numpy().astype("<i4"))
    valued = priority[~np.isnan(priority)]
    header = {
        "count": n,
        "meta": meta,
        "categories": categories,
        "ids": table.column("id").to_pylist(),
        "input_uris": table.column("input_uri").to_pylist(),
        "priority": {
            "scored": int(len(valued)),
            "min": float(valued.min()) if len(valued) else None,
            "max": float(valued.max()) if len(valued) else None,
        },
    }
    text = json.dumps(header, default=_plain).encode()
    padding = b" " * (-(4 + len(text)) % 4)
    head = struct.pack("<I", len(text) + len(padding))
    return b"".join([head, text, padding, *(array.tobytes() for array in arrays)])


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot send {type(value).__name__} as JSON")
