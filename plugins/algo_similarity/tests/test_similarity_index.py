"""The hnswlib index: persisted, checked against the store on start, never trusted blindly."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from chroma_core.config import Settings
from chroma_core.distance import exact_knn
from chroma_core.service import Chroma


def clustered(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 10, size=(20, d))
    return (centers[rng.integers(0, 20, n)] + rng.normal(size=(n, d))).astype(np.float32)


def service(path, **extra) -> Chroma:
    env = {f"CHROMA_{k.upper()}": str(v) for k, v in extra.items()}
    return Chroma(Settings.from_env(env, path=path))


def add(chroma: Chroma, space: str, data: np.ndarray, **fields):
    import pyarrow as pa

    n, d = data.shape
    table = pa.table(
        {
            "id": [f"r{space}{i}" for i in range(n)] if "ids" not in fields else fields["ids"],
            "dataset": fields.get("dataset", ["d"] * n),
            "context": ["training"] * n,
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(data.ravel()), d),
        }
    )
    return chroma.add(space, table)


def wait_for_index(chroma, space, timeout=60.0) -> dict:
    deadline = time.monotonic() + timeout
    while (status := chroma.status(space))["index"]["pending"] and time.monotonic() < deadline:
        time.sleep(0.02)
    return status


def recall(found, truth) -> float:
    return np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])


def neighbor_ids(chroma, space, queries, k=10, where=None):
    table = chroma.nearest_neighbors(space, queries=queries, k=k, where=where).table.to_pandas()
    return [table[table["query"] == q]["id"].tolist() for q in range(len(queries))], table


def test_index_is_saved_on_close_and_loaded_on_start(tmp_path):
    data = clustered(3000)
    chroma = service(tmp_path)
    chroma.space("s")
    ids = np.array(add(chroma, "s", data))
    found, _ = neighbor_ids(chroma, "s", data[:20])
    chroma.close()
    assert (tmp_path / "indexes" / "s.hnsw").exists() and (tmp_path / "indexes" / "s.json").exists()

    again = service(tmp_path)
    found_again, _ = neighbor_ids(again, "s", data[:20])
    index = again.context.existing_state("algo_similarity").by_space["s"]
    assert index.indexed_seq == 3000 and index.live == 3000
    assert found_again == found
    truth, _ = exact_knn(data[:20], data, 10, "l2")
    assert recall(found_again, ids[truth].tolist()) >= 0.99
    again.close()


def test_index_behind_the_store_is_caught_up_and_one_that_disagrees_is_rebuilt(tmp_path):
    data = clustered(2000, seed=1)
    chroma = service(tmp_path)
    chroma.space("s")
    add(chroma, "s", data[:1000])
    neighbor_ids(chroma, "s", data[:1])
    chroma.close()

    # rows written while no index was listening: the store is the truth
    plain = service(tmp_path)
    plain.store.add("s", _rows(data[1000:], 1000))
    plain.store.delete("s", ids=[f"rs{i}" for i in range(100)])
    plain.close()

    again = service(tmp_path)
    found, _ = neighbor_ids(again, "s", data[1500:1510], k=1)
    assert [f[0] for f in found] == [f"x{i}" for i in range(1500, 1510)]
    found, _ = neighbor_ids(again, "s", data[:100], k=5)
    assert not {i for f in found for i in f} & {f"rs{i}" for i in range(100)}
    status = wait_for_index(again, "s")
    assert status["index"]["indexed"] == 1900 and status["space"]["count"] == 1900
    again.close()


def test_corrupt_index_file_is_rebuilt_from_the_store(tmp_path):
    data = clustered(500, seed=2)
    chroma = service(tmp_path)
    chroma.space("s")
    ids = add(chroma, "s", data)
    neighbor_ids(chroma, "s", data[:1])
    chroma.close()
    (tmp_path / "indexes" / "s.hnsw").write_bytes(b"garbage")
    again = service(tmp_path)
    found, _ = neighbor_ids(again, "s", data[:5], k=1)
    assert [f[0] for f in found] == ids[:5]
    again.close()


def test_a_batch_after_rows_the_index_never_heard_of_is_indexed_with_them(tmp_path):
    # After a crash, or when two writers' announcements arrive out of order, the first batch
    # the indexer hears of does not follow the last row it holds: it reads the rows between
    # from the store, and must not wait on itself doing so.
    data = clustered(1600, seed=7)
    chroma = service(tmp_path)
    chroma.space("s")
    add(chroma, "s", data[:1000])
    wait_for_index(chroma, "s")
    chroma.close()
    plain = service(tmp_path)
    plain.store.add("s", _rows(data[1000:1500], 1000))
    plain.close()

    again = service(tmp_path)
    add(again, "s", data[1500:], ids=[f"y{i}" for i in range(100)])
    status = wait_for_index(again, "s", timeout=30)
    assert (status["index"]["indexed"], status["index"]["pending"]) == (1600, 0)
    found, _ = neighbor_ids(again, "s", data[1000:1600:10], k=1)
    assert [f[0] for f in found] == [f"x{i}" for i in range(1000, 1500, 10)] + [
        f"y{i}" for i in range(0, 100, 10)
    ]
    again.close()


def test_an_index_file_with_a_page_lost_is_rebuilt_from_the_store(tmp_path):
    # A page the disk never wrote reads back as zeros: hnswlib loads such a file without
    # complaint and answers some queries wrongly, so only the checksum can tell.
    data = clustered(1000, seed=5)
    chroma = service(tmp_path)
    chroma.space("s")
    ids = add(chroma, "s", data)
    wait_for_index(chroma, "s")
    chroma.close()
    index_file, meta_file = tmp_path / "indexes" / "s.hnsw", tmp_path / "indexes" / "s.json"
    saved, meta = index_file.read_bytes(), meta_file.read_bytes()
    for at in (0.3, 0.6):
        page = int(len(saved) * at) // 4096 * 4096
        index_file.write_bytes(saved[:page] + bytes(4096) + saved[page + 4096 :])
        meta_file.write_bytes(meta)
        again = service(tmp_path)
        found, _ = neighbor_ids(again, "s", data, k=1)
        wrong = [i for i, f in zip(ids, found, strict=True) if f != [i]]
        assert wrong == [], f"page at {page} of {len(saved)}: {len(wrong)} rows not found"
        status = wait_for_index(again, "s")
        assert status["index"]["indexed"] == 1000
        found, _ = neighbor_ids(again, "s", data, k=1)
        assert [f[0] for f in found] == ids
        again.close()


def test_leftovers_of_a_save_cut_short_are_removed_and_the_last_save_is_used(tmp_path):
    data = clustered(1000, seed=6)
    chroma = service(tmp_path)
    chroma.space("s")
    ids = add(chroma, "s", data)
    wait_for_index(chroma, "s")
    chroma.close()
    directory = tmp_path / "indexes"
    # a save killed half way through writing its files
    (directory / "s.hnsw.tmp").write_bytes((directory / "s.hnsw").read_bytes()[:5000])
    (directory / "s.json.tmp").write_text('{"dim": 16')
    again = service(tmp_path)
    found, _ = neighbor_ids(again, "s", data[:50], k=1)
    assert [f[0] for f in found] == ids[:50]
    index = again.context.existing_state("algo_similarity").by_space["s"]
    assert (index.indexed_seq, index.live) == (1000, 1000)  # loaded, not rebuilt
    assert sorted(p.name for p in directory.iterdir()) == ["s.hnsw", "s.json"]
    again.close()


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_broad_filters_use_the_index_and_keep_recall(tmp_path, metric):
    data = clustered(6000, seed=3)
    chroma = service(tmp_path, similarity_exact_limit=100)
    chroma.space("s", metric=metric)
    datasets = np.where(np.arange(6000) % 3 == 0, "third", "rest").tolist()
    ids = np.array(add(chroma, "s", data, dataset=datasets))
    queries = data[::120] + np.random.default_rng(4).normal(0, 0.5, size=(50, 16)).astype(
        np.float32
    )
    found, table = neighbor_ids(chroma, "s", queries, where={"dataset": "third"})
    meta = chroma.nearest_neighbors("s", queries=queries, k=10, where={"dataset": "third"}).meta
    assert meta["method"] == "hnsw_filtered"
    assert set(table["dataset"]) == {"third"}
    subset = np.nonzero(np.array(datasets) == "third")[0]
    truth, _ = exact_knn(queries, data[subset], 10, metric)
    assert recall(found, ids[subset][truth].tolist()) >= 0.99
    chroma.close()


def test_deleting_a_space_removes_its_index_files(tmp_path):
    chroma = service(tmp_path)
    chroma.space("s")
    data = clustered(100)
    add(chroma, "s", data)
    neighbor_ids(chroma, "s", data[:1])
    chroma.close()
    chroma = service(tmp_path)
    assert (tmp_path / "indexes" / "s.hnsw").exists()
    chroma.delete_space("s")
    assert not (tmp_path / "indexes" / "s.hnsw").exists()
    chroma.close()


def _rows(data: np.ndarray, start: int):
    import pyarrow as pa

    from chroma_core.schema import validate_rows

    n, d = data.shape
    return validate_rows(
        pa.table(
            {
                "id": [f"x{i}" for i in range(start, start + n)],
                "dataset": ["d"] * n,
                "context": ["training"] * n,
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(data.ravel()), d),
            }
        ),
        d,
    )


def test_rows_are_findable_before_the_index_has_them(tmp_path):
    data = clustered(3000, seed=5)
    chroma = service(tmp_path)
    chroma.space("s")
    add(chroma, "s", data[:2000])
    wait_for_index(chroma, "s")
    index = chroma.context.existing_state("algo_similarity").by_space["s"]
    with index.build_lock:  # holds the indexer back, as a long build would
        ids = add(chroma, "s", data[2000:], ids=[f"new{i}" for i in range(1000)])
        status = chroma.status("s")
        assert status["index"] == {"kind": "hnsw", "indexed": 2000, "pending": 1000,
                                   "indexed_seq": 2000}  # fmt: skip
        result = chroma.nearest_neighbors("s", queries=data[2000:2010], k=5)
        assert result.meta["unindexed"] == 1000
        frame = result.table.to_pandas()
        nearest = frame[frame["rank"] == 0].sort_values("query")["id"].tolist()
        assert nearest == ids[:10]
        # the exact tail and the index merge into the true neighbours over all rows
        truth, _ = exact_knn(data[2000:2010], data, 5, "l2")
        names = np.array([f"rs{i}" for i in range(2000)] + ids)
        assert (
            recall(
                [frame[frame["query"] == q]["id"].tolist() for q in range(10)],
                names[truth].tolist(),
            )
            >= 0.99
        )
        filtered = chroma.nearest_neighbors(
            "s", queries=data[2000:2002], k=3, where={"id": {"$in": ids[:50] + ["rs0"]}}
        )
        assert set(filtered.table.column("id").to_pylist()) <= set(ids[:50]) | {"rs0"}
    status = wait_for_index(chroma, "s")
    assert status["index"]["pending"] == 0 and status["index"]["indexed"] == 3000
    assert chroma.nearest_neighbors("s", queries=data[2000:2001], k=1).meta["unindexed"] == 0
    chroma.close()


def test_lazy_build_waits_for_the_first_unfiltered_query(tmp_path):
    data = clustered(1500, seed=6)
    chroma = service(tmp_path, similarity_build="lazy")
    chroma.space("s")
    ids = add(chroma, "s", data)
    assert chroma.status("s")["index"]["pending"] == 1500
    result = chroma.nearest_neighbors("s", queries=data[:5], k=1)
    assert result.table.column("id").to_pylist() == ids[:5]
    status = wait_for_index(chroma, "s")
    assert status["index"]["indexed"] == 1500 and status["index"]["pending"] == 0
    chroma.close()


def test_a_behind_indexer_reads_rows_back_from_the_store(tmp_path):
    data = clustered(4000, seed=7)
    chroma = service(tmp_path)
    chroma.space("s")
    add(chroma, "s", data[:10], ids=[f"a{i}" for i in range(10)])
    wait_for_index(chroma, "s")
    indexes = chroma.context.existing_state("algo_similarity")
    with indexes.by_space["s"].build_lock:
        for part in range(10):
            rows = data[10 + part * 399 : 10 + (part + 1) * 399]
            add(chroma, "s", rows, ids=[f"b{part}_{i}" for i in range(len(rows))])
        handed = list(indexes.pending.queue)
        assert sum(item[2] is not None for item in handed) <= 4
    status = wait_for_index(chroma, "s")
    assert status["index"]["indexed"] == 4000
    chroma.close()


def test_rows_after_a_gap_in_the_seqs_are_indexed(tmp_path):
    # restored rows keep the seqs they had, gaps of deleted rows included: the indexer
    # reads them back from the store instead of adding them in order
    import pyarrow as pa

    data = clustered(50, d=4)
    chroma = service(tmp_path)
    chroma.restore_space("s", "l2")
    for start, stop, first in ((0, 20, 5), (20, 50, 40)):
        table = pa.table(
            {
                "seq": pa.array(np.arange(first, first + stop - start), pa.int64()),
                "id": [f"r{i}" for i in range(start, stop)],
                "dataset": ["d"] * (stop - start),
                "context": ["training"] * (stop - start),
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(data[start:stop].ravel()), 4
                ),
            }
        )
        chroma.restore_rows("s", table)
    status = wait_for_index(chroma, "s", timeout=30)
    assert status["index"] == {"kind": "hnsw", "indexed": 50, "pending": 0, "indexed_seq": 69}
    found, _ = neighbor_ids(chroma, "s", data[:5], k=1)
    assert found == [[f"r{i}"] for i in range(5)]
    chroma.close()


def test_rows_after_a_gap_are_caught_up_from_the_store(tmp_path):
    """A batch whose first seq is not the next one reads the gap back from the store; the
    catch-up takes the build lock the batch already holds, which once hung the indexer."""
    import threading

    from chroma_algo_similarity.index import SpaceIndex

    chroma = service(tmp_path)
    chroma.space("s")
    data = clustered(30)
    add(chroma, "s", data[:20])
    seqs, _ = chroma.store.vectors("s", with_vectors=False)
    assert len(seqs) == 20
    index = SpaceIndex(tmp_path / "indexes", "s", "l2", 16)
    # hand it only the last ten rows, as if the first ten had been handed to no one
    worker = threading.Thread(
        target=index.add_new, args=(chroma.store, "s", seqs[10:], data[10:20]), daemon=True
    )
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the indexer hung on its own lock"
    assert index.indexed_seq == int(seqs[-1]) and index.live == 20
    chroma.close()


def test_rows_of_a_space_dropped_before_they_were_indexed_are_let_go(tmp_path, caplog):
    from chroma_algo_similarity.plugin import STATE

    chroma = service(tmp_path)
    try:
        chroma.space("gone")
        add(chroma, "gone", clustered(10))
        wait_for_index(chroma, "gone")
        indexes = chroma.context.existing_state(STATE)
        index = indexes.by_space["gone"]
        chroma.delete_space("gone")
        # rows of the dropped space, still waiting for the indexer, as after a race
        with caplog.at_level("ERROR", logger="chroma.similarity"):
            indexes.pending.put((index, "gone", np.arange(1, 3), clustered(2)))
            indexes.pending.put((index, "gone", None, None))
            deadline = time.monotonic() + 30
            while not indexes.pending.empty() and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)
        assert [r for r in caplog.records if r.levelname == "ERROR"] == []
        chroma.space("after")
        add(chroma, "after", clustered(5))
        assert wait_for_index(chroma, "after")["index"]["pending"] == 0
    finally:
        chroma.close()


def test_a_catch_up_stops_at_the_end_of_its_window_when_the_service_closes(tmp_path, monkeypatch):
    """Closing the service while its index catches up ends the catch-up before the store
    is closed (it read on from a closed store, and failed, when it took longer than the
    wait for it); what it indexed is saved and the rest is caught up on the next start."""
    from chroma_algo_similarity import index as index_module
    from chroma_algo_similarity.index import SpaceIndex

    monkeypatch.setattr(index_module, "READ_ROWS", 100)
    chroma = service(tmp_path)
    chroma.space("s")
    data = clustered(450)
    add(chroma, "s", data)
    index = SpaceIndex(tmp_path / "indexes", "s", "l2", 16)
    read = chroma.store.vectors
    windows = []

    def one_window_then_close(space, **query):
        windows.append(query["seqs"])
        index.stopping.set()  # the service closes while this window is read
        return read(space, **query)

    monkeypatch.setattr(chroma.store, "vectors", one_window_then_close)
    index.catch_up(chroma.store, "s")
    assert len(windows) == 1 and index.indexed_seq == 100 and index.live == 100
    chroma.close()
    # a new start finds the rest in the store and catches up
    again = service(tmp_path)
    status = wait_for_index(again, "s")
    assert status["index"]["indexed"] == 450
    found, _ = neighbor_ids(again, "s", data[:5], k=1)
    assert [ids[0] for ids in found] == [f"rs{i}" for i in range(5)]
    again.close()


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda meta: [meta], id="meta-a-list"),
        pytest.param(lambda meta: None, id="meta-null"),
        pytest.param(lambda meta: {**meta, "capacity": "lots"}, id="capacity-text"),
        pytest.param(lambda meta: {**meta, "live": True}, id="live-a-boolean"),
        pytest.param(lambda meta: {k: v for k, v in meta.items() if k != "dim"}, id="no-dim"),
        pytest.param(lambda meta: {**meta, "indexed_seq": meta["indexed_seq"] + 50}, id="ahead"),
        pytest.param(lambda meta: {**meta, "space_id": meta["space_id"] + 1}, id="other-space"),
    ],
)
def test_an_index_whose_meta_is_not_what_a_save_writes_is_rebuilt(tmp_path, damage, caplog):
    data = clustered(400, seed=3)
    chroma = service(tmp_path)
    chroma.space("s")
    ids = add(chroma, "s", data[:300])
    wait_for_index(chroma, "s")
    chroma.close()
    meta_path = tmp_path / "indexes" / "s.json"
    meta_path.write_text(json.dumps(damage(json.loads(meta_path.read_text()))))

    again = service(tmp_path)
    try:
        neighbor_ids(again, "s", data[:1])  # the index is opened before more rows come
        # rows added after the start are found too: an index claiming seqs it never held
        # would hide them from unfiltered queries
        ids += add(again, "s", data[300:], ids=[f"y{i}" for i in range(100)])
        wait_for_index(again, "s")
        found, _ = neighbor_ids(again, "s", data, k=1)
        assert sum(f[0] == i for f, i in zip(found, ids, strict=True)) >= 396
        assert "rebuilding" in caplog.text
        index = again.context.existing_state("algo_similarity").by_space["s"]
        assert index.live == 400 and index.indexed_seq == 400
    finally:
        again.close()


def saved_index(path, seed: int):
    """A space of 300 rows whose index was saved by a service that closed: its vectors and
    ids."""
    data = clustered(300, seed=seed)
    chroma = service(path)
    chroma.space("s")
    ids = add(chroma, "s", data)
    wait_for_index(chroma, "s")
    chroma.close()
    return data, ids


def test_leftovers_of_a_save_cut_short_are_removed_whatever_they_are(tmp_path):
    data, ids = saved_index(tmp_path, seed=4)
    directory = tmp_path / "indexes"
    (directory / "s.hnsw.tmp").mkdir()
    (directory / "s.hnsw.tmp" / "part").write_bytes(b"x")
    (directory / "s.json.tmp").mkdir()

    again = service(tmp_path)
    try:
        found, _ = neighbor_ids(again, "s", data[:20], k=1)
        assert [f[0] for f in found] == ids[:20]
        assert not (directory / "s.hnsw.tmp").exists() and not (directory / "s.json.tmp").exists()
    finally:
        again.close()


def test_an_index_file_that_is_a_directory_is_replaced_by_a_rebuilt_one(tmp_path):
    data, ids = saved_index(tmp_path, seed=5)
    index_file = tmp_path / "indexes" / "s.hnsw"
    index_file.unlink()
    index_file.mkdir()

    again = service(tmp_path)
    try:
        found, _ = neighbor_ids(again, "s", data[:20], k=1)
        assert [f[0] for f in found] == ids[:20]
        wait_for_index(again, "s")
    finally:
        again.close()
    assert index_file.is_file()
    assert json.loads((tmp_path / "indexes" / "s.json").read_text())["live"] == 300


def test_a_gap_of_a_trillion_seqs_is_jumped_and_other_spaces_are_not_kept_waiting(tmp_path):
    import pyarrow as pa

    data = clustered(2100, seed=6)
    chroma = service(tmp_path)
    try:
        chroma.restore_space("far", dim=16)
        far = _rows(data[:2], 0).append_column("seq", pa.array([1, 10**12], pa.int64()))
        chroma.restore_rows("far", far)
        # a later add follows the largest seq, whatever it is
        after = add(chroma, "far", data[2:100], ids=[f"f{i}" for i in range(98)])
        chroma.space("near")
        ids = add(chroma, "near", data[100:])
        status = wait_for_index(chroma, "near", timeout=120)
        assert status["index"]["pending"] == 0 and status["index"]["indexed"] == 2000
        found, _ = neighbor_ids(chroma, "near", data[100:120], k=1)
        assert [f[0] for f in found] == ids[:20]
        status = wait_for_index(chroma, "far", timeout=120)
        assert status["index"] == {
            "kind": "hnsw",
            "indexed": 100,
            "pending": 0,
            "indexed_seq": 10**12 + 98,
        }
        found, _ = neighbor_ids(chroma, "far", data[:100], k=1)
        assert [f[0] for f in found] == ["x0", "x1", *after]
    finally:
        chroma.close()
