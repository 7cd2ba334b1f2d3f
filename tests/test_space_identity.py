"""A space deleted and made again under its name is another space: nothing derived from the
old one (its index, cached filter rows, projections, scores being computed, jobs) reaches
the new one. Races are played as fixed interleavings: the index worker is held while the
space is replaced, and a priority computation replaces it between scoring and storing."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pyarrow as pa
import pytest

from chroma_algo_priority.plugin import Priority, _jobs, _key
from chroma_algo_priority.scores import PriorityParams
from chroma_core.config import Settings
from chroma_core.service import Chroma
from chroma_wire.errors import InvalidInput, NotFound
from tests.stores import STORES, store_environment

N = 300
DIM = 16
#: the stores with the index that answers their unfiltered queries: the hnswlib plugin's
#: files, or ClickHouse's own inverted file (tables named by the space's number)
INDEXES = [
    pytest.param("sqlite", {}, id="sqlite-hnsw"),
    pytest.param("clickhouse", {"clickhouse_ivf": "false"}, id="clickhouse-hnsw"),
    pytest.param("clickhouse", {}, id="clickhouse-ivf"),
]


def service(store: str, path, **settings) -> Chroma:
    env = {f"CHROMA_{name.upper()}": str(value) for name, value in settings.items()}
    return Chroma(Settings.from_env({**store_environment(store, path), **env}, path=path))


def rows(vectors: np.ndarray, *, context="training", labels=None, dataset="d") -> pa.Table:
    n = len(vectors)
    columns = {
        "id": [f"r{i}" for i in range(n)],
        "dataset": [dataset] * n,
        "context": [context] * n if isinstance(context, str) else context,
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
    }
    if labels is not None:
        columns["label"] = labels
    return pa.table(columns)


def vectors(seed: int, n: int = N) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def wait_for_index(chroma: Chroma, space: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while chroma.status(space)["index"]["pending"]:
        assert time.monotonic() < deadline, "the index never caught up"
        time.sleep(0.02)


def nearest_ids(chroma: Chroma, space: str, queries: np.ndarray, where=None) -> list[str]:
    table = chroma.nearest_neighbors(space, queries=queries, k=1, where=where).table
    return table.column("id").to_pylist()


class Held:
    """An item for the index worker that keeps it busy until released: what is queued after
    it waits, as it would behind a long catch-up."""

    def __init__(self):
        self.started = threading.Event()
        self.release = threading.Event()

    def catch_up(self, store, space):
        self.started.set()
        assert self.release.wait(30)


def hold_indexer(chroma: Chroma) -> Held:
    indexes = chroma.context.existing_state("algo_similarity")
    held = Held()
    indexes.pending.put((held, "held", None, None))
    assert held.started.wait(10)
    return held


@pytest.mark.parametrize(("store", "settings"), INDEXES)
@pytest.mark.parametrize("batches", [1, 10], ids=["handed-over", "read-back"])
def test_rows_queued_for_a_deleted_space_never_reach_the_space_made_after_it(
    store, settings, batches, tmp_path
):
    # saved after every step, so what the worker does with the old rows reaches the disk
    chroma = service(store, tmp_path, similarity_save_seconds=0.0, **settings)
    old, new = vectors(1), vectors(2)
    chroma.space("s")
    chroma.add("s", rows(old[:10]))
    wait_for_index(chroma, "s")
    held = hold_indexer(chroma)
    # with more batches than are handed over in memory, the worker reads rows back instead
    for part in np.array_split(np.arange(10, N), batches):
        chroma.add("s", rows(old)[int(part[0]) : int(part[-1]) + 1])
    chroma.delete_space("s")
    chroma.space("s")
    for part in np.array_split(np.arange(N), batches):
        chroma.add("s", rows(new)[int(part[0]) : int(part[-1]) + 1])
    held.release.set()
    wait_for_index(chroma, "s")

    expected = [f"r{i}" for i in range(N)]
    assert nearest_ids(chroma, "s", new) == expected
    assert chroma.status("s")["index"]["indexed"] == N
    space_id = chroma.space_info("s").space_id
    chroma.close()

    hnsw = (tmp_path / "indexes" / "s.json").exists()
    assert hnsw == (settings != {} or store == "sqlite")
    meta = json.loads((tmp_path / "indexes" / "s.json").read_text()) if hnsw else {}
    again = service(store, tmp_path, **settings)
    try:
        assert nearest_ids(again, "s", new) == expected
        if hnsw:
            index = again.context.existing_state("algo_similarity").by_space["s"]
            assert index.live == N and index.indexed_seq == again.store.max_seq("s")
            # the saved index was the new space's, used as it was
            assert meta["space_id"] == space_id and meta["live"] == N
    finally:
        again.close()


@pytest.mark.parametrize(("store", "settings"), INDEXES[:2])
def test_a_saved_index_of_a_deleted_space_is_never_loaded_for_the_space_made_after_it(
    store, settings, tmp_path
):
    chroma = service(store, tmp_path, **settings)
    chroma.space("s")
    chroma.add("s", rows(vectors(1)))
    wait_for_index(chroma, "s")
    chroma.close()
    saved = {path.name: path.read_bytes() for path in (tmp_path / "indexes").iterdir()}

    # the space is made again with as many rows (by another server of the same ClickHouse,
    # say), and the old space's index files are found on start
    plain = service(store, tmp_path, **settings)
    plain.delete_space("s")
    plain.space("s")
    plain.add("s", rows(vectors(2)))
    plain.close()
    for name, content in saved.items():  # the old space's index, put back as it was
        (tmp_path / "indexes" / name).write_bytes(content)

    again = service(store, tmp_path, **settings)
    try:
        assert nearest_ids(again, "s", vectors(2)) == [f"r{i}" for i in range(N)]
        wait_for_index(again, "s")
        assert nearest_ids(again, "s", vectors(2)) == [f"r{i}" for i in range(N)]
    finally:
        again.close()


@pytest.mark.parametrize("store", STORES)
def test_filter_and_projection_caches_are_of_one_space_not_of_a_name(store, tmp_path):
    chroma = service(store, tmp_path)
    try:
        chroma.space("s")
        chroma.add("s", rows(vectors(1), dataset="a"))
        where = {"dataset": "a"}
        assert nearest_ids(chroma, "s", vectors(1)[:20], where) == [f"r{i}" for i in range(20)]
        first = chroma.run("s", "projection", {"sample": 100})
        chroma.delete_space("s")
        chroma.space("s")
        # as many rows under the same ids and seqs, other vectors
        chroma.add("s", rows(vectors(2), dataset="a"))
        assert nearest_ids(chroma, "s", vectors(2)[:20], where) == [f"r{i}" for i in range(20)]
        second = chroma.run("s", "projection", {"sample": 100})
        assert second.meta["cached"] is False
        assert second.table.column("x").to_pylist() != first.table.column("x").to_pylist()
    finally:
        chroma.close()


def triage_space(chroma: Chroma, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, DIM)).astype(np.float32)
    context = ["training"] * 100 + ["triage"] * 100
    labels = ["a" if v > 0 else "b" for v in x[:, 0]]
    chroma.space("s")
    chroma.add("s", rows(x, context=context, labels=labels))


@pytest.mark.parametrize("store", STORES)
def test_scores_computed_before_a_delete_are_never_stored_in_the_space_made_after_it(
    store, tmp_path
):
    chroma = service(store, tmp_path)
    try:
        triage_space(chroma, 1)
        old = chroma.space_info("s")

        def progress(phase, **counts):
            if phase == "storing":  # scored, not yet stored: the space is replaced now
                chroma.delete_space("s")
                triage_space(chroma, 2)

        with pytest.raises(NotFound, match="'s' was deleted"):
            Priority().compute(chroma.context, old, PriorityParams(), False, progress)
        assert chroma.priorities("s", n=None).num_rows == 0
        # no trigger can be recorded from scores the space does not have
        with pytest.raises(InvalidInput, match="no scored inputs"):
            chroma.trigger_retraining("s", n=5)
        assert chroma.triggers("s") == []
    finally:
        chroma.close()


@pytest.mark.parametrize("store", STORES)
def test_a_background_job_of_a_deleted_space_is_not_the_new_space_s(store, tmp_path):
    chroma = service(store, tmp_path)
    try:
        triage_space(chroma, 1)
        old = chroma.space_info("s")
        release = threading.Event()

        def work(progress):
            progress("scoring", rows=100)
            assert release.wait(30)
            return Priority().compute(chroma.context, old, PriorityParams(), False, progress)

        jobs = _jobs(chroma.context)
        jobs.start(_key(old), work)
        assert chroma.run("s", "priority_status").meta["job"]["state"] == "running"
        chroma.delete_space("s")
        triage_space(chroma, 2)
        # the new space has no job, and one can be started at once
        assert chroma.run("s", "priority_status").meta["job"] is None
        started = chroma.run("s", "priority", {"background": True}).meta["job"]
        assert started["state"] == "running"
        release.set()
        deadline = time.monotonic() + 60
        while chroma.run("s", "priority_status").meta["job"]["state"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for thread in list(jobs.threads.values()):
            thread.join(30)
        status = chroma.run("s", "priority_status").meta
        assert status["job"]["state"] == "done" and status["scored"] == 100
        # the scores are the new space's: computed from its own rows
        mine = Priority().compute(
            chroma.context, chroma.space_info("s"), PriorityParams(), False, lambda *a, **k: None
        )
        stored = chroma.priorities("s", n=None).to_pandas().set_index("id")["priority"]
        computed = mine.table.to_pandas().set_index("id")["priority"]
        assert np.allclose(stored.sort_index(), computed.sort_index())
    finally:
        chroma.close()
