"""Options several commands share: where the data is, ``--json``, ``--where``."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import click
from click.core import ParameterSource

from chroma_client import Client


def with_client(command=None, *, creates: bool = False):
    """Add ``--url``, ``--token`` and ``--path`` to ``command``, which then receives an open
    :class:`Client` as its first argument (closed when the command ends). Only a command
    that ``creates`` a store (``@with_client(creates=True)``) opens a data directory that
    holds none: any other says there is no store there, so a mistyped ``--path`` is not
    taken for a new, empty store."""
    if command is None:
        return functools.partial(with_client, creates=creates)

    @functools.wraps(command)
    def run(*args, url: str | None, token: str | None, path: Path | None, **kwargs):
        with connect(url, token, path, creates=creates) as client:
            return command(client, *args, **kwargs)

    options = [
        click.option(
            "--url",
            envvar="CHROMA_URL",
            metavar="URL",
            help="a Chroma server, e.g. http://127.0.0.1:8000 (env CHROMA_URL); "
            "without it the data directory is opened in this process",
        ),
        click.option(
            "--token",
            envvar="CHROMA_TOKEN",
            metavar="TOKEN",
            help="bearer token for a server that wants one (env CHROMA_TOKEN)",
        ),
        click.option(
            "--path",
            envvar="CHROMA_PATH",
            type=click.Path(file_okay=False, path_type=Path),
            help="data directory when no server is given (env CHROMA_PATH; default ./chroma_data)",
        ),
    ]
    for option in reversed(options):
        run = option(run)
    return run


def connect(
    url: str | None, token: str | None, path: Path | None, *, creates: bool = True
) -> Client:
    """A client on the server ``url``, else embedded on ``path``. A flag beats a variable:
    ``--path`` on the command line opens the directory even with CHROMA_URL set. Unless
    the command ``creates`` a store, the directory must hold one already."""
    context = click.get_current_context()
    typed = {
        name
        for name in ("url", "path")
        if context.get_parameter_source(name) == ParameterSource.COMMANDLINE
    }
    if typed == {"url", "path"}:
        raise click.UsageError("give --url or --path, not both")
    if "path" in typed or url is None:
        # the client would read CHROMA_URL itself and refuse the path beside it
        os.environ.pop("CHROMA_URL", None)
        if not creates:
            _check_store(path)
        return Client(path=path)
    return Client(url, token=token)


def _check_store(path: Path | None) -> None:
    """``UsageError`` when the data directory is missing or empty: nothing was ever stored
    there."""
    where = path if path is not None else Path(os.environ.get("CHROMA_PATH") or "chroma_data")
    if not where.is_dir() or not any(where.iterdir()):
        flag = "--path" if path is not None else "--path (or CHROMA_PATH)"
        raise click.UsageError(
            f"no Chroma store at {str(where)!r}: give {flag} a data directory that holds one, "
            "or --url a server; chroma load and chroma import create a store"
        )


def json_option(command):
    return click.option(
        "--json", "as_json", is_flag=True, help="print JSON for scripts instead of text"
    )(command)


class JsonObject(click.ParamType):
    """A JSON object given on the command line, such as a ``where`` filter."""

    name = "JSON"

    def convert(self, value, param, ctx):
        if isinstance(value, dict):
            return value
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            self.fail(f"{value!r} is not valid JSON: {exc}", param, ctx)
        if not isinstance(parsed, dict):
            self.fail(f"{value!r} is not a JSON object", param, ctx)
        return parsed


def where_option(command):
    return click.option(
        "--where",
        type=JsonObject(),
        help='a filter as JSON, e.g. \'{"dataset": "prod-2026-11"}\' or '
        '\'{"confidence": {"$lt": 0.5}}\'',
    )(command)


def strategy_option(command):
    return click.option(
        "--strategy",
        type=click.Choice(["top_priority", "diverse"]),
        default="top_priority",
        show_default=True,
        help="diverse: high priorities spread over the space, near-copies skipped",
    )(command)
