"""The inverted file kept in ClickHouse (CHROMA_CLICKHOUSE_IVF=1): exact below its training
size, close to exact above it, and every write seen by the next query."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa
import pytest

from chroma_core.config import Settings
from chroma_core.distance import exact_knn
from chroma_core.filters import parse
from chroma_core.plugins import open_store
from chroma_core.schema import validate_rows
from chroma_store_clickhouse.cells import nearest_cells
from chroma_store_clickhouse.store import ClickHouseStore
from tests.stores import store_environment

DIM = 16
TRAIN_ROWS = 2_000


def clustered(n: int, seed: int = 0, clusters: int = 40) -> np.ndarray:
    """Rows around a few dozen centres, as model embeddings gather around classes."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(clusters, DIM)) * 4
    return (centres[rng.integers(0, clusters, n)] + rng.normal(size=(n, DIM))).astype(np.float32)


def batch(x: np.ndarray, start: int, datasets: list[str] | None = None) -> pa.Table:
    n = len(x)
    return validate_rows(
        pa.table(
            {
                "id": [f"r{i}" for i in range(start, start + n)],
                "dataset": datasets or ["d"] * n,
                "context": ["training"] * n,
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), DIM),
            }
        ),
        None,
    )


def open_ivf(path, **extra: str) -> ClickHouseStore:
    env = {
        **store_environment("clickhouse", path),
        "CHROMA_CLICKHOUSE_IVF": "1",
        "CHROMA_CLICKHOUSE_IVF_TRAIN_ROWS": str(TRAIN_ROWS),
        "CHROMA_CLICKHOUSE_IVF_PROBES": "8",
        **extra,
    }
    store = open_store(Settings.from_env(env, path=path))
    assert isinstance(store, ClickHouseStore) and store.ivf is not None
    return store


@pytest.fixture
def store(tmp_path):
    # trained by hand in these tests: the automatic training waits for far more rows
    opened = open_ivf(tmp_path, CHROMA_CLICKHOUSE_IVF_TRAIN_ROWS="1000000")
    opened.create_space("s", "l2", {})
    yield opened
    opened.close()


def search(store: ClickHouseStore, queries: np.ndarray, k: int = 10, metric_space: str = "s"):
    return store.nearest_neighbors(store.get_space(metric_space), queries, k, None)


def recall(found: np.ndarray, x: np.ndarray, queries: np.ndarray, k: int, metric="l2") -> float:
    truth = exact_knn(queries, x, k, metric)[0] + 1  # row i is stored under seq i + 1
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth, strict=True)]))


def sid_of(store: ClickHouseStore, name: str = "s") -> int:
    return store._space_row(name)[1]


def test_an_untrained_space_is_searched_exactly(store):
    x = clustered(500)
    store.add("s", batch(x, 0))
    answer = search(store, x[:20] + 0.01)
    assert answer.meta["method"] == "clickhouse_exact"
    assert recall(answer.seqs, x, x[:20] + 0.01, 10) == 1.0


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_a_trained_space_answers_from_its_cells_close_to_exact(tmp_path, metric):
    store = open_ivf(tmp_path, CHROMA_CLICKHOUSE_IVF_TRAIN_ROWS="1000000")
    try:
        store.create_space("m", metric, {})
        x = clustered(6_000)
        store.add("m", batch(x[:3_000], 0))
        assert store.ivf.train(sid_of(store, "m"), metric) == 1
        store.add("m", batch(x[3_000:], 3_000))  # assigned as they are added
        queries = clustered(100, seed=1)
        answer = search(store, queries, 10, "m")
        assert answer.meta["method"] == "clickhouse_ivf" and answer.meta["probes"] == 8
        assert answer.meta["cells"] > 8
        assert recall(answer.seqs, x, queries, 10, metric) >= 0.9
        # probing every cell is exact search
        every = store.ivf.search(sid_of(store, "m"), metric, queries, 10, answer.meta["cells"])
        assert recall(every.seqs, x, queries, 10, metric) == 1.0
    finally:
        store.close()


@pytest.mark.parametrize("where", [None, {"dataset": "half"}])
def test_many_queries_in_one_call_answer_as_each_alone(store, monkeypatch, where):
    import chroma_store_clickhouse.ivf as ivf

    x = clustered(4_000)
    names = ["half" if i % 2 else "d" for i in range(len(x))]
    store.add("s", batch(x, 0, names))
    store.ivf.train(sid_of(store, "s"), "l2")
    store.delete("s", ids=[f"r{i}" for i in range(0, 4_000, 7)])  # tombstones hide these
    # more queries than one statement takes, so the batches meet
    monkeypatch.setattr(ivf, "BATCH_QUERIES", 16)
    queries = clustered(40, seed=4)
    space, parsed = store.get_space("s"), parse(where)
    together = store.nearest_neighbors(space, queries, 10, parsed)
    assert together.meta["method"] == "clickhouse_ivf"
    for i, query in enumerate(queries):
        alone = store.nearest_neighbors(space, query[None, :], 10, parsed)
        assert together.seqs[i].tolist() == alone.seqs[0].tolist()
        np.testing.assert_allclose(together.distances[i], alone.distances[0], rtol=1e-5)
    assert not set(together.seqs.ravel()) & set(range(1, 4_001, 7))
    # the catalogue of every neighbour comes with them, read by key
    listed = dict(zip(together.rows.column("seq").to_pylist(),
                      together.rows.column("id").to_pylist(), strict=True))  # fmt: skip
    assert all(listed[s] == f"r{s - 1}" for s in together.seqs.ravel())


def test_rows_added_after_training_are_found_at_once_and_deleted_ones_never(store):
    x = clustered(3_000)
    store.add("s", batch(x, 0))
    store.ivf.train(sid_of(store, "s"), "l2")
    new = clustered(50, seed=7) + 40  # far from every stored row
    store.add("s", batch(new, 3_000))
    answer = search(store, new, 1)
    assert answer.seqs[:, 0].tolist() == list(range(3_001, 3_051))
    store.delete("s", ids=[f"r{i}" for i in range(3_000, 3_050)])
    after = search(store, new, 5)
    assert not set(after.seqs.ravel()) & set(range(3_001, 3_051))
    assert (after.seqs >= 1).all()


def test_a_filter_is_answered_from_the_cells_or_exactly_by_how_much_it_matches(store):
    x = clustered(8_000)
    # every 2nd row in "half", every 100th in "few": the catalogue filters below
    names = ["few" if i % 100 == 0 else "half" if i % 2 else "d" for i in range(len(x))]
    store.add("s", batch(x, 0, names))
    store.ivf.train(sid_of(store, "s"), "l2")
    queries = clustered(50, seed=3)
    space = store.get_space("s")

    def truth(name: str) -> np.ndarray:
        rows = np.flatnonzero(np.array(names) == name)
        return rows[exact_knn(queries, x[rows], 10, "l2")[0]] + 1

    wide = store.nearest_neighbors(space, queries, 10, parse({"dataset": "half"}))
    # half the rows match: the cells answer, probing twice as many
    assert wide.meta["method"] == "clickhouse_ivf"
    assert wide.meta["probes"] == 16 and wide.meta["filtered_share"] == pytest.approx(0.5)
    assert set(wide.seqs.ravel()) <= set(np.flatnonzero(np.array(names) == "half") + 1)
    half = truth("half")
    found = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(wide.seqs, half, strict=True)])
    assert found >= 0.9
    # the neighbours' catalogue comes with them, as without a filter
    assert set(wide.rows.column("dataset").to_pylist()) == {"half"}
    # 1% of the rows: fewer than a probe of cells would read, so scanned exactly
    narrow = store.nearest_neighbors(space, queries, 10, parse({"dataset": "few"}))
    assert narrow.meta["method"] == "clickhouse_exact"
    assert np.array_equal(np.sort(narrow.seqs, axis=1), np.sort(truth("few"), axis=1))
    # metadata is not in the cells: always exact
    keyed = store.nearest_neighbors(space, queries, 10, parse({"tag": {"$ne": "x"}}))
    assert keyed.meta["method"] == "clickhouse_exact"


def test_a_new_generation_replaces_the_old_while_reads_and_writes_go_on(store, monkeypatch):
    import chroma_store_clickhouse.ivf as ivf

    monkeypatch.setattr(ivf, "PAGE_ROWS", 200)  # a training of many pages, to write into
    x = clustered(4_000)
    store.add("s", batch(x[:2_000], 0))
    sid = sid_of(store, "s")
    assert store.ivf.train(sid, "l2") == 1
    failures: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            answer = search(store, x[:5], 1)
            if answer.seqs[:, 0].tolist() != [1, 2, 3, 4, 5]:
                failures.append(str(answer.seqs[:, 0].tolist()))

    reader = threading.Thread(target=read)
    reader.start()
    store.add("s", batch(x[2_000:3_000], 2_000))
    trained: list[int] = []
    trainer = threading.Thread(target=lambda: trained.append(store.ivf.train(sid, "l2")))
    try:
        trainer.start()
        # writes go on while the generation is built: each batch is found by the next
        # query, from whichever generation answers it
        at, during = 3_000, 0
        while trainer.is_alive() or at < 3_200:
            if at + 50 > len(x):
                break
            during += trainer.is_alive()
            store.add("s", batch(x[at : at + 50], at))
            answer = search(store, x[at : at + 50 : 10], 1)
            if answer.seqs[:, 0].tolist() != list(range(at + 1, at + 51, 10)):
                failures.append(f"batch at {at}: {answer.seqs[:, 0].tolist()}")
            at += 50
        trainer.join()
    finally:
        stop.set()
        reader.join()
    assert failures == [] and trained == [2] and during >= 1
    assert store.ivf.state(sid, fresh=True)[:1] == (2,)
    # every row, those written during the training too, is in the new generation
    answer = search(store, x[2_000:at:25], 1)
    assert answer.meta["generation"] == 2
    assert answer.seqs[:, 0].tolist() == list(range(2_001, at + 1, 25))


def test_rows_a_crash_left_out_of_the_cells_are_assigned_when_the_store_opens(tmp_path):
    store = open_ivf(tmp_path, CHROMA_CLICKHOUSE_IVF_TRAIN_ROWS="1000000")
    store.create_space("s", "l2", {})
    x = clustered(2_500)
    store.add("s", batch(x[:2_000], 0))
    sid = sid_of(store, "s")
    store.ivf.train(sid, "l2")
    store.add("s", batch(x[2_000:], 2_000))
    # as if the server stopped between an add's rows and its cells
    store._command(f"ALTER TABLE ivf_{sid} DELETE WHERE seq > 2000", settings={"mutations_sync": 2})
    store.close()
    reopened = open_ivf(tmp_path, CHROMA_CLICKHOUSE_IVF_TRAIN_ROWS="1000000")
    try:
        answer = reopened.nearest_neighbors(reopened.get_space("s"), x[2_000:2_020], 1, None)
        assert answer.meta["method"] == "clickhouse_ivf"
        assert answer.seqs[:, 0].tolist() == list(range(2_001, 2_021))
    finally:
        reopened.close()


# Both halves run in their own process: the engine opens one directory per process.
OPENED = """
import json, os, signal, sys
from pathlib import Path
import numpy as np
from chroma_core.config import Settings
from chroma_core.plugins import open_store
from chroma_store_clickhouse import ivf
sys.path.insert(0, sys.argv[2])
from test_ivf import batch, clustered, search

env = {"CHROMA_STORE": "clickhouse", "CHROMA_CLICKHOUSE_DSN": "chdb://" + sys.argv[1],
       "CHROMA_CLICKHOUSE_IVF_TRAIN_ROWS": "1000000", "CHROMA_CLICKHOUSE_IVF_PROBES": "8"}
store = open_store(Settings.from_env(env, path=Path(sys.argv[1]).parent))
x = clustered(6_000)
"""

KILLED_IN_TRAINING = (
    OPENED
    + """
store.create_space("s", "l2", {})
store.add("s", batch(x[:3_000], 0))
sid = store._space_row("s")[1]
assert store.ivf.train(sid, "l2") == 1
store.add("s", batch(x[3_000:], 3_000))
original, calls = ivf.InvertedFile._insert, [0]
def crashing(self, *args, **kwargs):
    calls[0] += 1
    if calls[0] == 2:  # the second page of the new generation's rows
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, *args, **kwargs)
ivf.InvertedFile._insert = crashing
ivf.PAGE_ROWS = 1_000
store.ivf.train(sid, "l2")
"""
)

AFTER_THE_KILL = (
    OPENED
    + """
sid = store._space_row("s")[1]
every = np.arange(0, 6_000, 20) + 7  # rows from both adds, one query each
out = {"current": store.ivf.state(sid, fresh=True)[0], "expected": (every + 1).tolist()}
answer = search(store, x[every], 1)
out["before"] = [answer.meta["generation"], answer.seqs[:, 0].tolist()]
out["trained"] = store.ivf.train(sid, "l2")
out["kept"] = [g for (g,) in store._query(
    f"SELECT DISTINCT generation FROM ivf_{sid} ORDER BY generation")]
answer = search(store, x[every], 1)
out["after"] = [answer.meta["generation"], answer.seqs[:, 0].tolist()]
store.close()
print(json.dumps(out))
"""
)


def test_a_kill_while_a_generation_is_built_loses_nothing(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    def run(script: str) -> subprocess.CompletedProcess:
        directory, here = str(tmp_path / "ch"), str(Path(__file__).parent)
        return subprocess.run(
            [sys.executable, "-c", script, directory, here],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    killed = run(KILLED_IN_TRAINING)
    assert killed.returncode == -9, killed.stderr[-2000:]
    checked = run(AFTER_THE_KILL)
    assert checked.returncode == 0, checked.stderr[-2000:]
    out = json.loads(checked.stdout.strip().splitlines()[-1])
    # the generation being built was never switched to: the first still answers, and
    # every row, those added after it was trained too, is found by its own vector
    assert out["current"] == 1
    assert out["before"] == [1, out["expected"]]
    # the next training drops what the kill left, and takes a number never given; the
    # one current before stays for readers that took it just before the switch
    assert out["trained"] == 3 and out["kept"] == [1, 3]
    assert out["after"] == [3, out["expected"]]


def test_rows_that_drift_to_a_few_cells_get_the_space_trained_again(store):
    x = clustered(4_000)
    store.add("s", batch(x, 0))
    sid = sid_of(store, "s")
    assert store.ivf.train(sid, "l2") == 1
    before = store.ivf.lopsided(sid)
    assert 1 <= before < 8
    # a new kind of input, far from everything trained on, lands in the few cells nearest
    drifted = clustered(600, seed=9, clusters=3) + 25
    store.add("s", batch(drifted[:300], 4_000))  # 7.5% more rows: not looked at yet
    assert store.ivf.state(sid, fresh=True)[0] == 1
    store.add("s", batch(drifted[300:], 4_300))  # 15%: the cells are looked at
    deadline = time.monotonic() + 60
    while store.ivf.state(sid, fresh=True)[0] == 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert store.ivf.state(sid, fresh=True)[0] == 2, "not trained again"
    assert store.ivf.lopsided(sid) < 8
    answer = search(store, drifted[:20], 1)
    assert answer.meta["generation"] == 2
    assert answer.seqs[:, 0].tolist() == list(range(4_001, 4_021))


def test_rows_like_the_ones_trained_on_leave_the_cells_as_they_are(store):
    x = clustered(6_000)
    store.add("s", batch(x[:4_000], 0))
    sid = sid_of(store, "s")
    store.ivf.train(sid, "l2")
    store.add("s", batch(x[4_000:], 4_000))  # 50% more, spread like the rest
    looked = store.ivf._training[sid]  # the look at the cells' sizes ran, and ended there
    looked.join(timeout=60)
    assert not looked.is_alive() and store.ivf._checked[sid] == 6_000
    assert store.ivf.state(sid, fresh=True)[0] == 1


def test_a_space_is_trained_by_itself_once_it_holds_enough_rows(tmp_path):
    store = open_ivf(tmp_path)
    try:
        store.create_space("s", "l2", {})
        x = clustered(TRAIN_ROWS + 500)
        store.add("s", batch(x[:1_000], 0))
        assert store.ivf.state(sid_of(store, "s"), fresh=True)[0] == 0
        store.add("s", batch(x[1_000:], 1_000))
        deadline = time.monotonic() + 120
        while store.ivf.state(sid_of(store, "s"), fresh=True)[0] == 0:
            assert time.monotonic() < deadline, "the space was not trained"
            time.sleep(0.2)
        answer = search(store, x[:10], 1)
        assert answer.meta["method"] == "clickhouse_ivf"
        assert answer.seqs[:, 0].tolist() == list(range(1, 11))
    finally:
        store.close()


def test_a_training_asked_for_while_the_cells_are_looked_at_is_not_lost(tmp_path, monkeypatch):
    store = open_ivf(tmp_path)
    try:
        store.create_space("s", "l2", {})
        sid = sid_of(store, "s")
        x = clustered(TRAIN_ROWS + 500)
        looking, done = threading.Event(), threading.Event()

        def slow_look(space, generation=None):
            looking.set()
            done.wait(60)
            return 1.0

        monkeypatch.setattr(store.ivf, "lopsided", slow_look)
        store.ivf.train_soon(sid, "l2", only_if_lopsided=True)
        assert looking.wait(10)
        store.add("s", batch(x, 0))  # enough rows to train: asked while the look runs
        assert store.ivf.state(sid, fresh=True)[0] == 0
        done.set()
        deadline = time.monotonic() + 120
        while store.ivf.state(sid, fresh=True)[0] == 0:
            assert time.monotonic() < deadline, "the training asked for was dropped"
            time.sleep(0.2)
    finally:
        store.close()


def test_two_stores_on_one_database_give_the_same_answers(tmp_path):
    writer = open_ivf(tmp_path, CHROMA_CLICKHOUSE_IVF_TRAIN_ROWS="1000000")
    reader = open_ivf(tmp_path, CHROMA_CLICKHOUSE_IVF_TRAIN_ROWS="1000000")
    try:
        writer.create_space("s", "l2", {})
        x = clustered(3_000)
        writer.add("s", batch(x, 0))
        writer.ivf.train(sid_of(writer, "s"), "l2")
        queries = clustered(20, seed=3)
        mine = writer.nearest_neighbors(writer.get_space("s"), queries, 10, None)
        theirs = reader.nearest_neighbors(reader.get_space("s"), queries, 10, None)
        assert theirs.meta["method"] == "clickhouse_ivf"
        assert (mine.seqs == theirs.seqs).all()
    finally:
        writer.close()
        reader.close()


def test_nearest_cells_ranks_like_the_metric():
    centroids = np.eye(4, dtype=np.float32) * 2
    points = np.array([[1.9, 0, 0, 0], [0, 0, 0, -3]], dtype=np.float32)
    assert nearest_cells(points, centroids, 1, "l2")[:, 0].tolist() == [0, 0]
    assert sorted(nearest_cells(points[:1], centroids, 4, "ip")[0].tolist()) == [0, 1, 2, 3]
    assert nearest_cells(points * 10, centroids, 1, "cosine")[0, 0] == 0


def test_a_query_through_the_service_carries_the_catalogue_read_with_the_neighbors(tmp_path):
    from chroma_core.service import Chroma

    env = {
        **store_environment("clickhouse", tmp_path),
        "CHROMA_CLICKHOUSE_IVF": "1",
        "CHROMA_CLICKHOUSE_IVF_TRAIN_ROWS": "1000000",
    }
    chroma = Chroma(Settings.from_env(env, path=tmp_path))
    try:
        chroma.space("s")
        x = clustered(3_000)
        table = batch(x, 0).set_column(
            2, "context", pa.array(["training", "triage"] * 1_500, pa.string())
        )
        table = table.set_column(
            table.column_names.index("label"),
            "label",
            pa.array([f"c{i % 3}" for i in range(3_000)]),
        )
        chroma.add("s", table)
        chroma.store.ivf.train(sid_of(chroma.store), "l2")
        found = chroma.nearest_neighbors("s", queries=x[:4], k=3).table.to_pandas()
        assert found.groupby("query")["id"].first().tolist() == ["r0", "r1", "r2", "r3"]
        first = found[found["rank"] == 0].sort_values("query")
        assert first["context"].tolist() == ["training", "triage", "training", "triage"]
        assert first["label"].tolist() == ["c0", "c1", "c2", "c0"]
        assert set(found["dataset"]) == {"d"}
    finally:
        chroma.close()


def test_space_status_shows_the_inverted_file(tmp_path):
    from chroma_core.service import Chroma

    env = {
        **store_environment("clickhouse", tmp_path),
        "CHROMA_CLICKHOUSE_IVF": "1",
        "CHROMA_CLICKHOUSE_IVF_TRAIN_ROWS": "1000000",
        "CHROMA_CLICKHOUSE_IVF_PROBES": "8",
    }
    chroma = Chroma(Settings.from_env(env, path=tmp_path))
    try:
        chroma.space("s")
        chroma.add("s", batch(clustered(2_000), 0))
        before = chroma.status("s")["index"]
        assert before["generation"] == 0 and before["training"] is False
        chroma.store.ivf.train(sid_of(chroma.store), "l2")
        after = chroma.status("s")["index"]
        assert after["generation"] == 1 and after["trained_rows"] == 2_000
        assert after["cells"] > 8 and after["probes"] == 8
        assert after["kind"] == "clickhouse_ivf"
        assert after["indexed"] == 2_000 and after["pending"] == 0
        # the store answers the space's queries, so the similarity plugin keeps no index
        chroma.nearest_neighbors("s", queries=clustered(3, seed=5), k=5)
        assert not any((tmp_path / "indexes").glob("*")), "an hnswlib index was built"
    finally:
        chroma.close()


def test_a_state_read_that_overlaps_a_switch_is_not_kept(store):
    x = clustered(2_000)
    store.add("s", batch(x, 0))
    sid = sid_of(store)
    store.ivf.train(sid, "l2")
    read = store._query

    def read_then_switch(sql, params=None):
        found = read(sql, params)
        if "FROM ivf_state" in sql:
            # another thread makes generation 2 current while this read is on its way
            store._query = read
            store.ivf._switch(sid, 2, 16, 2_000)
        return found

    store._query = read_then_switch
    assert store.ivf.state(sid, fresh=True)[0] == 1  # what was current when it was read
    assert store.ivf.state(sid)[0] == 2  # not cached: the next read sees the switch
