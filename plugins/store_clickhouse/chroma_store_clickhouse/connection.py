"""Where the ClickHouse store connects: a server over HTTP, or the embedded chdb engine."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import clickhouse_connect

from chroma_core.config import PluginSettings, Settings
from chroma_store_clickhouse.settings import SETTINGS
from chroma_wire.errors import InvalidInput


@dataclass(frozen=True)
class Target:
    """What to connect to; ``describe`` leaves the password out."""

    options: dict[str, Any]
    database: str
    embedded: bool
    vector_index: bool
    #: the inverted file in ClickHouse, when on: rows before training, cells a query reads
    ivf: bool = False
    ivf_train_rows: int = 100_000
    ivf_probes: int = 32
    #: the cluster every table is created on, replicated; None for one server
    cluster: str | None = None

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


def target(settings: Settings, values: Mapping[str, Any] | None = None) -> Target:
    """Where to connect, from the ``clickhouse_*`` settings (``CHROMA_CLICKHOUSE_*``): a
    DSN (``chdb:///path`` or ``http://...``), or host, port, user, password and secure;
    neither means embedded chdb under the data path. ``values`` are the typed settings the
    service read; without them they are read from ``settings`` here, the same way."""
    if values is None:
        values = PluginSettings.read({"store_clickhouse": SETTINGS}, settings)
    database = values["clickhouse_database"]
    vector_index = values["clickhouse_vector_index"]
    dsn = values["clickhouse_dsn"]
    host = values["clickhouse_host"]
    if not dsn and not host:
        dsn = f"chdb://{(settings.path / 'clickhouse').resolve()}"
    if dsn:
        embedded = dsn.startswith("chdb:")
        if embedded and importlib.util.find_spec("chdb") is None:
            raise InvalidInput(
                "the embedded ClickHouse engine is not installed: pip install "
                "'chroma-store-clickhouse[embedded]', or set CHROMA_CLICKHOUSE_HOST to a server"
            )
        return Target({"dsn": dsn}, database, embedded, vector_index, **_ivf(values))
    options = {
        "host": host,
        "port": values["clickhouse_port"],
        "username": values["clickhouse_user"],
        "password": values["clickhouse_password"],
        "secure": values["clickhouse_secure"],
        # one client is shared by the server's threads, so no server-side session
        "autogenerate_session_id": False,
    }
    return Target(options, database, False, vector_index, **_ivf(values))


def _ivf(values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "ivf": values["clickhouse_ivf"],
        "ivf_train_rows": values["clickhouse_ivf_train_rows"],
        "ivf_probes": values["clickhouse_ivf_probes"],
        "cluster": values["clickhouse_cluster"],
    }
