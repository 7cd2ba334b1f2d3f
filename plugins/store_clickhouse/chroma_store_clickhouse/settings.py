"""The settings the ClickHouse store reads (``CHROMA_CLICKHOUSE_*``), declared apart from the
connection code so that declaring them does not import the ClickHouse client."""

from __future__ import annotations

from chroma_core.config import Setting

DATABASE_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
SETTINGS = [
    Setting(
        "clickhouse_dsn",
        str,
        None,
        "chdb:///path (embedded) or http(s)://user:password@host:port/; none: the host below, "
        "else embedded chdb under the data path",
        secret=True,
    ),
    Setting("clickhouse_host", str, None, "the ClickHouse server, when no DSN"),
    Setting("clickhouse_port", int, 8123, "its HTTP port", minimum=1, maximum=65535),
    Setting("clickhouse_user", str, "default", "the user Chroma connects as"),
    Setting("clickhouse_password", str, "", "that user's password", secret=True),
    Setting("clickhouse_secure", bool, False, "connect over HTTPS"),
    Setting(
        "clickhouse_database",
        str,
        "chroma",
        "the database holding Chroma's tables, created if missing: letters, digits and _, "
        "starting with a letter or _",
        pattern=DATABASE_NAME,
    ),
    Setting(
        "clickhouse_vector_index",
        bool,
        False,
        "add ClickHouse's vector_similarity HNSW index to each space (l2, cosine)",
    ),
    Setting(
        "clickhouse_cluster",
        str,
        None,
        "a ClickHouse cluster to create every table on (ON CLUSTER), replicated through "
        "ClickHouse Keeper; none: one server",
        pattern=r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}",
    ),
    Setting(
        "clickhouse_ivf",
        bool,
        True,
        "answer k-NN from an inverted file kept in ClickHouse, so that servers hold no "
        "index of their own (off: each server's hnswlib index answers unfiltered queries)",
    ),
    Setting(
        "clickhouse_ivf_train_rows",
        int,
        100_000,
        "rows a space holds before its inverted file is trained (searched exactly until then)",
        minimum=1,
    ),
    Setting(
        "clickhouse_ivf_probes",
        int,
        32,
        "cells of the inverted file a query reads: more find more true neighbours, slower",
        minimum=1,
        maximum=65_536,
    ),
]
