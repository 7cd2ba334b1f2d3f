"""What the ClickHouse store promises beyond the conformance suite."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa
import pytest

from chroma_core.distance import exact_knn
from chroma_core.filters import parse
from chroma_core.plugins import plugin_manager, plugin_settings
from chroma_core.schema import validate_rows
from chroma_core.service import Chroma
from chroma_core.store import BatchAlreadyStored
from chroma_store_clickhouse.connection import target
from chroma_store_clickhouse.schema import SCHEMA_VERSION
from chroma_store_clickhouse.store import ClickHouseStore
from chroma_wire.errors import Conflict, InvalidInput, NotFound, ServerError
from tests.stores import store_settings


def batch(n: int, dim: int = 8, start: int = 0, dataset="d", seed: int = 0, data=None) -> pa.Table:
    if data is None:
        data = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return validate_rows(
        pa.table(
            {
                "id": [f"r{i}" for i in range(start, start + n)],
                "dataset": [dataset] * n if isinstance(dataset, str) else dataset,
                "context": ["training"] * n,
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(data.ravel()), dim),
            }
        ),
        None,
    )


@pytest.fixture
def settings(tmp_path):
    return store_settings("clickhouse", tmp_path)


@pytest.fixture
def store(settings):
    s = ClickHouseStore.open(settings)
    s.create_space("s", "l2", {})
    yield s
    s.close()


def test_the_plugin_opens_clickhouse_for_its_name_only(settings):
    pm = plugin_manager()
    values = plugin_settings(pm, settings)
    opened = pm.hook.chroma_open_store(name="clickhouse", settings=settings, plugin_settings=values)
    assert isinstance(opened, ClickHouseStore)
    opened.close()
    other = pm.hook.chroma_open_store(name="sqlite", settings=settings, plugin_settings=values)
    assert not isinstance(other, ClickHouseStore)
    other.close()


def test_settings_choose_server_or_embedded_engine(tmp_path):
    from chroma_core.config import Settings

    server = target(Settings.from_env({
        "CHROMA_CLICKHOUSE_HOST": "ch.internal", "CHROMA_CLICKHOUSE_PORT": "8443",
        "CHROMA_CLICKHOUSE_USER": "chroma", "CHROMA_CLICKHOUSE_PASSWORD": "s3cret",
        "CHROMA_CLICKHOUSE_SECURE": "true", "CHROMA_CLICKHOUSE_DATABASE": "prod",
    }))  # fmt: skip
    assert server.options["host"] == "ch.internal" and server.options["port"] == 8443
    assert server.options["secure"] is True and server.database == "prod"
    assert "s3cret" not in server.describe() and not server.embedded
    embedded = target(Settings.from_env({}, path=tmp_path))
    assert (
        embedded.embedded and embedded.options["dsn"] == f"chdb://{tmp_path.resolve()}/clickhouse"
    )
    with pytest.raises(InvalidInput, match="CHROMA_CLICKHOUSE_DATABASE"):
        target(Settings.from_env({"CHROMA_CLICKHOUSE_DATABASE": "x; DROP DATABASE y"}))


def test_schema_version_is_recorded_and_a_newer_one_refused(settings, store):
    assert store._query("SELECT max(version) FROM chroma_migrations")[0][0] == SCHEMA_VERSION
    store._command("INSERT INTO chroma_migrations VALUES (99, now64(3))")
    with pytest.raises(ServerError, match="newer"):
        ClickHouseStore.open(settings)


def test_vectors_are_arrays_of_float32_and_catalogue_columns_low_cardinality(store):
    store.add("s", batch(3))
    sid = store._space_row("s")[1]
    types = dict(store._query(f"SELECT name, type FROM system.columns WHERE table = 'rows_{sid}' "
                              "AND database = currentDatabase()"))  # fmt: skip
    assert types["embedding"] == "Array(Float32)"
    assert types["dataset"] == "LowCardinality(String)"
    assert types["label"] == "LowCardinality(Nullable(String))"


def test_inserts_are_on_disk_before_they_are_acknowledged(store):
    sid = store._space_row("s")[1]
    for table in (*(f"{t}_{sid}" for t in ("rows", "ids", "deleted", "priorities")), "batch_keys"):
        assert "fsync_after_insert = 1" in table_ddl(store, table), table


def table_ddl(store: ClickHouseStore, table: str) -> str:
    return store._query(
        "SELECT create_table_query FROM system.tables WHERE database = currentDatabase() "
        "AND name = {t:String}", {"t": table}
    )[0][0]  # fmt: skip


def test_a_retried_insert_with_the_same_token_is_stored_once(store):
    sid = store._space_row("s")[1]
    from chroma_store_clickhouse.store import _rows_for_insert

    table = _rows_for_insert(batch(5), np.arange(1, 6))
    for _ in range(2):
        store._client().insert_arrow(
            f"rows_{sid}", table, settings={"insert_deduplication_token": "batch-1"}
        )
    assert store.count("s") == 5


def fail_inserting_rows(store: ClickHouseStore, monkeypatch, *, after: bool) -> None:
    """Make the store's next rows insert fail, before or ``after`` it reached ClickHouse: a
    crash or a lost connection between a batch's key and its rows."""
    insert = store._insert_rows

    def failing(*args):
        monkeypatch.setattr(store, "_insert_rows", insert)
        if after:
            insert(*args)
        raise ConnectionResetError("the connection to ClickHouse was lost")

    monkeypatch.setattr(store, "_insert_rows", failing)


def test_a_key_whose_rows_never_went_in_is_completed_under_its_seqs(settings, store, monkeypatch):
    store.add("s", batch(2, start=100))
    rows = batch(5)
    fail_inserting_rows(store, monkeypatch, after=False)
    with pytest.raises(ConnectionResetError):
        store.add("s", rows, batch_key="k")
    assert store.count("s") == 2
    recorded = store._query("SELECT first_seq, count FROM batch_keys WHERE key = 'k'")
    assert recorded == [(3, 5)]

    # after a restart the batch is sent again: its rows go in under the seqs its key holds
    store.close()
    reopened = ClickHouseStore.open(settings)
    try:
        seqs = reopened.add("s", rows, batch_key="k")
        assert seqs.tolist() == [3, 4, 5, 6, 7]
        assert reopened.count("s") == 7
        with pytest.raises(BatchAlreadyStored) as again:
            reopened.add("s", rows, batch_key="k")
        assert again.value.seqs.tolist() == seqs.tolist()
        # the first insert, had it only been reported lost, lands as the same block: once
        reopened._insert_rows(reopened._space_row("s", fresh=True), rows, seqs)
        assert reopened.count("s") == 7
        assert reopened.add("s", batch(1, start=200))[0] == 8
    finally:
        reopened.close()


def test_rows_that_went_in_though_their_insert_failed_are_not_stored_twice(store, monkeypatch):
    rows = batch(5)
    fail_inserting_rows(store, monkeypatch, after=True)
    with pytest.raises(ConnectionResetError):
        store.add("s", rows, batch_key="k")
    assert store.count("s") == 5
    with pytest.raises(BatchAlreadyStored) as again:
        store.add("s", rows, batch_key="k")
    assert again.value.seqs.tolist() == [1, 2, 3, 4, 5]
    assert store.count("s") == 5


def test_completing_a_batch_refuses_ids_another_batch_stored_meanwhile(store, monkeypatch):
    fail_inserting_rows(store, monkeypatch, after=False)
    with pytest.raises(ConnectionResetError):
        store.add("s", batch(3), batch_key="k")
    store.add("s", batch(1, start=1, seed=9))
    with pytest.raises(Conflict, match="'r1'"):
        store.add("s", batch(3), batch_key="k")
    assert store.get("s").column("id").to_pylist() == ["r1"]


def test_batch_keys_expire_after_a_day(store):
    assert "TTL added_at + toIntervalDay(1)" in table_ddl(store, "batch_keys")
    store.add("s", batch(1), batch_key="today")
    store._command(
        "INSERT INTO batch_keys VALUES (1, 'last-week', 'x', 1, 1, now() - INTERVAL 7 DAY)"
    )
    store._command("OPTIMIZE TABLE batch_keys FINAL")
    assert store._query("SELECT key FROM batch_keys") == [("today",)]


def test_a_version_1_database_gains_batch_keys(settings, store):
    store.add("s", batch(2))
    store._command("DROP TABLE batch_keys")
    store._command("DELETE FROM chroma_migrations WHERE version >= 2")
    store.close()
    reopened = ClickHouseStore.open(settings)
    try:
        rows = batch(1, start=10)
        assert reopened.add("s", rows, batch_key="k").tolist() == [3]
        with pytest.raises(BatchAlreadyStored):
            reopened.add("s", rows, batch_key="k")
        assert reopened.count("s") == 3
        assert reopened._query("SELECT max(version) FROM chroma_migrations")[0][0] == SCHEMA_VERSION
    finally:
        reopened.close()


def test_readers_never_see_half_a_delete_or_half_a_priority_rewrite(store):
    for i in range(12):
        store.add("s", batch(50, start=i * 50, dataset=f"b{i}", seed=i))
    ids = [f"r{i}" for i in range(600)]
    counts, priority_sets, stop = [], [], threading.Event()

    def read():
        while not stop.is_set():
            counts.append(store.count("s"))
            priority_sets.append(set(store.priorities("s").column("priority").to_pylist()))

    def reads_made(at_least: int) -> None:
        deadline = time.monotonic() + 30
        while len(counts) < at_least and time.monotonic() < deadline:
            time.sleep(0.001)

    reader = threading.Thread(target=read)
    reader.start()
    for generation in range(6):
        reads_made(len(counts) + 2)  # so reads interleave with every write, even under load
        store.replace_priorities("s", pa.table({"id": ids, "priority": [float(generation)] * 600}))
        store.delete("s", where=parse({"dataset": f"b{generation}"}))
    reads_made(len(counts) + 2)
    stop.set()
    reader.join()
    assert len(counts) >= 14
    assert all(c % 50 == 0 for c in counts), counts
    assert all(len(s) <= 1 for s in priority_sets), [s for s in priority_sets if len(s) > 1][:3]


def _service(tmp_path, **extra) -> Chroma:
    settings = store_settings("clickhouse", tmp_path)
    from dataclasses import replace

    return Chroma(replace(settings, extra={**settings.extra, **extra}))


def test_filtered_neighbors_are_answered_inside_clickhouse(tmp_path):
    chroma = _service(tmp_path)
    chroma.space("s", metric="cosine")
    data = np.random.default_rng(1).normal(size=(500, 8)).astype(np.float32)
    datasets = np.where(np.arange(500) % 5 == 0, "a", "b").tolist()
    chroma.add("s", batch(500, dataset=datasets, data=data))
    queries = data[:3] + 0.01
    result = chroma.nearest_neighbors("s", queries=queries, k=5, where={"dataset": "a"})
    assert result.meta["method"] == "clickhouse_exact"
    subset = np.nonzero(np.array(datasets) == "a")[0]
    truth, distances = exact_knn(queries, data[subset], 5, "cosine")
    frame = result.table.to_pandas()
    for q in range(3):
        rows = frame[frame["query"] == q]
        assert rows["id"].tolist() == [f"r{i}" for i in subset[truth[q]]]
        np.testing.assert_allclose(rows["distance"], distances[q], atol=1e-5)
    # unfiltered too, exactly while the space is smaller than the inverted file's training
    unfiltered = chroma.nearest_neighbors("s", queries=queries, k=5)
    assert unfiltered.meta["method"] == "clickhouse_exact"
    chroma.close()


def test_with_the_inverted_file_off_each_server_s_hnswlib_index_answers(tmp_path):
    chroma = _service(tmp_path, clickhouse_ivf="0")
    chroma.space("s", metric="l2")
    data = np.random.default_rng(3).normal(size=(300, 8)).astype(np.float32)
    chroma.add("s", batch(300, data=data))
    result = chroma.nearest_neighbors("s", queries=data[:3], k=1)
    assert result.meta["method"] == "hnsw"
    assert chroma.status("s")["index"]["kind"] == "hnsw"
    chroma.close()


def test_vector_index_answers_unfiltered_queries_when_enabled(tmp_path):
    chroma = _service(tmp_path, clickhouse_vector_index="1")
    chroma.space("s", metric="l2")
    data = np.random.default_rng(2).normal(size=(2000, 16)).astype(np.float32)
    chroma.add("s", batch(2000, dim=16, data=data))
    sid = chroma.store._space_row("s")[1]
    indexes = chroma.store._query(
        "SELECT type FROM system.data_skipping_indices WHERE table = {t:String} "
        "AND database = currentDatabase()", {"t": f"rows_{sid}"}
    )  # fmt: skip
    assert ("vector_similarity",) in indexes
    queries = data[:20] + 0.01
    result = chroma.nearest_neighbors("s", queries=queries, k=10)
    assert result.meta["method"] == "clickhouse_vector_index"
    truth, distances = exact_knn(queries, data, 10, "l2")
    frame = result.table.to_pandas()
    hits = [
        len(set(frame[frame["query"] == q]["id"]) & {f"r{i}" for i in truth[q]}) / 10
        for q in range(20)
    ]
    assert np.mean(hits) >= 0.95
    first = frame[frame["query"] == 0].sort_values("rank")
    np.testing.assert_allclose(first["distance"].iloc[0], distances[0][0], atol=1e-4)
    chroma.close()


def test_an_unreachable_server_is_a_clear_error_without_the_password():
    from chroma_core.config import Settings

    settings = Settings.from_env({
        "CHROMA_STORE": "clickhouse", "CHROMA_CLICKHOUSE_HOST": "127.0.0.1",
        "CHROMA_CLICKHOUSE_PORT": "1", "CHROMA_CLICKHOUSE_PASSWORD": "hunter2",
    })  # fmt: skip
    with pytest.raises(ServerError, match="cannot open ClickHouse at http://127.0.0.1:1") as err:
        ClickHouseStore.open(settings)
    assert "hunter2" not in str(err.value)


def test_ids_go_to_clickhouse_in_runs_short_enough_for_a_url():
    from chroma_store_clickhouse.store import _id_chunks

    ids = pa.array([f"id-{i:06d}" * (1 + i % 7) for i in range(5_000)])
    runs = _id_chunks(ids, budget=16 << 10)
    assert [i for run in runs for i in run] == ids.to_pylist()
    assert len(runs) > 10
    longest = max(len(i) for i in ids.to_pylist()) + 4
    assert all(sum(len(i) + 4 for i in run) <= (16 << 10) + longest for run in runs)
    assert _id_chunks(pa.array([], pa.string())) == []
    assert _id_chunks(pa.array(["x" * 100]), budget=10) == [["x" * 100]]


def test_restoring_scores_of_many_ids_looks_them_up_in_runs(settings, monkeypatch):
    from chroma_store_clickhouse import store as module

    monkeypatch.setattr(module, "ID_RUN_BYTES", 4 << 10)
    store = ClickHouseStore.open(settings)
    store.create_space("s", "l2", {})
    n = 3_000
    store.add("s", batch(n, dim=2))
    ids = [f"r{i}" for i in range(n)]
    store.restore_priorities(
        "s", pa.table({"id": ids, "priority": np.linspace(0, 1, n), "components": ["{}"] * n})
    )
    top = store.priorities("s", n=2)
    assert top.column("id").to_pylist() == [f"r{n - 1}", f"r{n - 2}"]
    assert store.priorities("s").num_rows == n
    store.close()


def test_a_hundred_thousand_ids_are_looked_up_as_a_set_not_a_literal_list(store):
    # A literal list this long on the right of IN takes ClickHouse minutes to analyse; the
    # store hands it over as a subquery over the array, read in about a second per million.
    n = 100_000
    store.add("s", batch(n, dim=2))
    ids = [f"r{i}" for i in range(n)]
    assert store.get("s", ids=ids).num_rows == n
    assert store.count("s", parse({"id": {"$in": ids[::2]}})) == n // 2
    scores = pa.table({"id": ids, "priority": np.linspace(0, 1, n), "components": [None] * n,
                       "computed_at": ["2026-12-05T00:00:00+00:00"] * n})  # fmt: skip
    store.replace_priorities("s", scores)
    assert store.priorities("s", n=None).num_rows == n
    assert len(store.delete("s", ids=ids[: n - 10])) == n - 10
    assert store.get("s").column("id").to_pylist() == ids[n - 10 :]


def test_a_space_deleted_under_a_read_is_not_found_not_a_server_error(store):
    """A read that looked the space up, then found its tables gone (another server deleted
    it meanwhile), answers NotFound."""
    store.add("s", batch(5))
    sid = store._space_row("s")[1]
    assert store.count("s") == 5
    # the tables gone from under the cached space row, as after another server's delete
    store._command(f"DROP TABLE IF EXISTS rows_{sid}")
    for read in (
        lambda: store.get("s", limit=3),
        lambda: store.count("s", where=parse({"dataset": "d"})),
        lambda: store.vectors("s"),
    ):
        with pytest.raises(NotFound, match="deleted"):
            read()
