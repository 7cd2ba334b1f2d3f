"""CHROMA_CLICKHOUSE_CLUSTER: every statement the store issues to create, change or drop its
tables runs ON CLUSTER with replicated engines. No cluster runs here, so the statements are
checked by ClickHouse's own parser (formatQuery) in the embedded engine."""

from __future__ import annotations

import pytest

from chroma_core.config import Settings
from chroma_store_clickhouse import ivf, schema
from chroma_store_clickhouse.connection import target
from chroma_store_clickhouse.store import ClickHouseStore
from chroma_wire.errors import ChromaError
from tests.stores import store_environment, store_settings


def every_statement() -> list[str]:
    """What the store runs besides reads and inserts, for one space of each kind."""
    found = ["CREATE DATABASE IF NOT EXISTS chroma"]
    found += [statement for migration in schema.MIGRATIONS for statement in migration]
    found += list(schema.space_tables(7)) + list(ivf.tables(7))
    found.append(schema.vector_index(7, "l2", 128) or "")
    found += [
        "DROP TABLE IF EXISTS rows_7",
        "ALTER TABLE ivf_7 DROP PARTITION 2",
        "DELETE FROM batch_keys WHERE space_id = 7",
        "DELETE FROM ids_7 WHERE seq > 10",
    ]
    return found


@pytest.fixture
def parser(tmp_path):
    client = target(store_settings("clickhouse", tmp_path)).client(None)
    yield lambda sql: client.query("SELECT formatQuery({q:String})", {"q": sql}).result_rows[0][0]
    client.close()


def test_every_statement_parses_on_a_cluster_with_replicated_engines(parser):
    for statement in every_statement():
        clustered = schema.on_cluster(statement, "prod")
        formatted = parser(clustered)
        assert "ON CLUSTER prod" in formatted, formatted
        if "CREATE TABLE" in statement:
            assert "ENGINE = Replicated" in formatted, formatted
            name = statement.split("IF NOT EXISTS ")[1].split()[0]
            assert f"/clickhouse/tables/{{shard}}/{{database}}/{name}" in formatted


def test_without_a_cluster_statements_are_unchanged(parser):
    for statement in every_statement():
        assert "ON CLUSTER" not in parser(statement)


def test_reads_and_inserts_are_never_rewritten():
    for statement in ("SELECT 1", "INSERT INTO rows_7 VALUES (1)"):
        assert schema.on_cluster(statement, "prod") == statement


def test_a_cluster_this_server_does_not_know_is_named_at_start(tmp_path):
    env = {**store_environment("clickhouse", tmp_path), "CHROMA_CLICKHOUSE_CLUSTER": "nowhere"}
    with pytest.raises(ChromaError, match="nowhere"):
        ClickHouseStore.open(Settings.from_env(env, path=tmp_path))
