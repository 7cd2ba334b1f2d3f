"""``chroma-server``: run the web app under uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys

import uvicorn

from chroma_core.app import create_app
from chroma_core.config import Settings
from chroma_core.monitoring import HideSecrets
from chroma_core.slow_clients import SlowReaders, protocol_with_deadline
from chroma_wire.errors import ChromaError


def parse_args(argv=None, prog: str = "chroma-server") -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve Chroma over HTTP. Every flag also reads CHROMA_<FLAG> from the "
        "environment; flags win.",
    )
    parser.add_argument("--store", help="store plugin name (default sqlite)")
    parser.add_argument("--path", help="data directory (default ./chroma_data)")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--log-requests",
        action="store_true",
        default=None,
        help="write one JSON line per request to stderr (method, path, route, status, "
        "duration_ms, rows, client)",
    )
    parser.add_argument("--max-body-bytes", type=int, help="largest request body accepted")
    parser.add_argument(
        "--auth-token-file",
        help="file of bearer tokens, one a line: every route but /healthz then wants one "
        "(also CHROMA_AUTH_TOKENS, comma-separated)",
    )
    return parser.parse_args(argv)


def main(argv=None, prog: str = "chroma-server") -> None:
    args = parse_args(argv, prog)
    try:
        settings = Settings.from_env(**vars(args))
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
        app = create_app(settings)
    except ChromaError as exc:
        print(f"{prog}: {exc.detail}", file=sys.stderr)
        raise SystemExit(2) from None
    chroma = app.state.chroma
    # the socket is bound before a word is said of listening: a port in use is a clear
    # error here, not a traceback after a "listening" line
    try:
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        listener = socket.create_server((settings.host, settings.port), family=family)
    except OSError as exc:
        chroma.close()
        print(
            f"{prog}: cannot listen on {settings.host}:{settings.port}: "
            f"{exc.strerror or exc} (another server there? choose another with --port)",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    if not app.state.tokens and not _loopback(settings.host):
        print(
            f"{prog}: WARNING: listening on {settings.host} with no bearer token: anyone who "
            "can reach this address can read, change and delete every space. Give tokens "
            "(--auth-token-file, or CHROMA_AUTH_TOKENS) or listen on 127.0.0.1.",
            file=sys.stderr,
            flush=True,
        )
        logging.getLogger("chroma.server").warning(
            "listening on %s with no bearer token", settings.host
        )
    guarded = ", bearer tokens required" if app.state.tokens else ""
    print(
        f"Chroma {chroma.store.name} store at {settings.path.resolve()}, "
        f"listening on http://{settings.host}:{settings.port}{guarded}",
        flush=True,
    )
    config = uvicorn.Config(
        SlowReaders(app, settings.client_timeout_seconds),
        log_level=settings.log_level,
        # the request log replaces uvicorn's access lines rather than doubling them
        access_log=not settings.log_requests,
        http=protocol_with_deadline(settings.client_timeout_seconds),
        limit_concurrency=settings.max_connections,
    )
    # uvicorn's logging is configured by now: its access lines lose their secrets
    logging.getLogger("uvicorn.access").addFilter(HideSecrets())
    uvicorn.Server(config).run(sockets=[listener])


def _loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine alone."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    main()
