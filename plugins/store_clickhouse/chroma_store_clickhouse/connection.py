"""Where the ClickHouse store connects: a server over HTTP, or the embedded chdb engine."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from typing import Any

import clickhouse_connect

from chroma_core.config import Settings
from chroma_wire.errors import InvalidInput

DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Target:
    """What to connect to; ``describe`` leaves the password out."""

    options: dict[str, Any]
    database: str
    embedded: bool
    vector_index: bool

    def describe(self) -> str:
        if self.embedded:
            return f"embedded ClickHouse at {self.options['dsn'][len('chdb://') :]}"
        o = self.options
        if "dsn" in o:
            return re.sub(r"//[^@/]*@", "//", o["dsn"])
        scheme = "https" if o.get("secure") else "http"
        return f"ClickHouse at {scheme}://{o['host']}:{o['port']}"

    def client(self, database: str | None = None) -> Any:
        return clickhouse_connect.get_client(database=database or "default", **self.options)


def target(settings: Settings) -> Target:
    """Read ``CHROMA_CLICKHOUSE_*``: a DSN (``chdb:///path`` or ``http://...``), or host,
    port, user, password and secure; neither means embedded chdb under the data path."""
    extra = settings.extra
    database = extra.get("clickhouse_database", "chroma")
    if not DATABASE_NAME.match(database):
        raise InvalidInput(
            f"CHROMA_CLICKHOUSE_DATABASE={database!r} is not a valid database name "
            "(letters, digits and _, starting with a letter or _)"
        )
    vector_index = extra.get("clickhouse_vector_index", "0").lower() in TRUE
    dsn = extra.get("clickhouse_dsn")
    host = extra.get("clickhouse_host")
    if not dsn and not host:
        dsn = f"chdb://{(settings.path / 'clickhouse').resolve()}"
    if dsn:
        embedded = dsn.startswith("chdb:")
        if embedded and importlib.util.find_spec("chdb") is None:
            raise InvalidInput(
                "the embedded ClickHouse engine is not installed: pip install "
                "'chroma-store-clickhouse[embedded]', or set CHROMA_CLICKHOUSE_HOST to a server"
            )
        return Target({"dsn": dsn}, database, embedded, vector_index)
    try:
        port = int(extra.get("clickhouse_port", "8123"))
    except ValueError:
        raise InvalidInput("CHROMA_CLICKHOUSE_PORT must be a number") from None
    options = {
        "host": host,
        "port": port,
        "username": extra.get("clickhouse_user", "default"),
        "password": extra.get("clickhouse_password", ""),
        "secure": extra.get("clickhouse_secure", "false").lower() in TRUE,
        # one client is shared by the server's threads, so no server-side session
        "autogenerate_session_id": False,
    }
    return Target(options, database, False, vector_index)
