"""The neighbours of whole data sets, searched cell by cell in the inverted file: exact when
every cell is probed, close to it with the default probes, whatever the page sizes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from chroma_core.distance import exact_knn
from chroma_core.filters import parse
from chroma_core.schema import validate_rows
from chroma_core.store import JoinQuery
from chroma_store_clickhouse import cell_join
from plugins.store_clickhouse.tests.test_ivf import DIM, clustered, open_ivf, sid_of

TRAINING = parse({"context": "training"})
TRIAGE = parse({"context": "triage"})
N = 4_000


def rows(x: np.ndarray, start: int, context: str, labelled) -> pa.Table:
    n = len(x)
    return validate_rows(
        pa.table(
            {
                "id": [f"r{i}" for i in range(start, start + n)],
                "dataset": ["d"] * n,
                "context": [context] * n,
                "label": [f"c{i % 3}" if labelled(i) else None for i in range(start, start + n)],
                "inference": [f"c{i % 2}" for i in range(start, start + n)],
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), DIM),
            }
        ),
        None,
    )


@pytest.fixture(params=["l2", "cosine", "ip"])
def space(request, tmp_path):
    """Training rows 1..N (every fifth unlabelled), triage rows N+1..N+1000, trained."""
    store = open_ivf(tmp_path, CHROMA_CLICKHOUSE_IVF_TRAIN_ROWS="1000000")
    metric = request.param
    store.create_space("s", metric, {})
    x = clustered(N + 1_000)
    store.add("s", rows(x[:N], 0, "training", lambda i: i % 5 != 4))
    store.add("s", rows(x[N:], N, "triage", lambda i: False))
    assert store.ivf.train(sid_of(store), metric) == 1
    yield store, x, metric
    store.close()


def joined(store, query: JoinQuery):
    answer = store.join_neighbors(store.get_space("s"), query)
    pages = list(answer.pages)
    cat = lambda name: np.concatenate([getattr(p, name) for p in pages])  # noqa: E731
    return answer, cat("seqs"), cat("neighbors"), cat("distances"), pages


def truth(x, searching, among, k, metric, exclude_self=False):
    """Exact neighbours (seqs) of rows ``searching`` among rows ``among`` (seq = row + 1)."""
    found, distances = exact_knn(x[searching], x[among], k + exclude_self, metric)
    seqs = among[found] + 1
    if exclude_self:
        keep = seqs != (searching + 1)[:, None]
        seqs = np.stack([row[mask][:k] for row, mask in zip(seqs, keep, strict=True)])
        distances = np.stack([row[m][:k] for row, m in zip(distances, keep, strict=True)])
    return seqs, distances


def test_probing_every_cell_finds_the_exact_neighbours(space):
    store, x, metric = space
    every = store.ivf.state(sid_of(store))[1]
    answer, seqs, neighbors, distances, _ = joined(
        store, JoinQuery(TRIAGE, TRAINING, 5, among_labelled=True, probes=every)
    )
    assert answer.rows == 1_000 and answer.meta["probes"] == every
    np.testing.assert_array_equal(seqs, np.arange(N, N + 1_000) + 1)
    labelled = np.flatnonzero(np.arange(N) % 5 != 4)
    expected, expected_distances = truth(x, np.arange(N, N + 1_000), labelled, 5, metric)
    np.testing.assert_array_equal(neighbors, expected)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-4, atol=1e-4)


def test_the_default_probes_find_most_neighbours_and_never_the_row_itself(space):
    store, x, metric = space
    answer, seqs, neighbors, _, _ = joined(
        store, JoinQuery(TRAINING, TRAINING, 10, rows_labelled=True, among_labelled=True)
    )
    # the labelled training rows are 64% of the rows: more cells are probed to find as many
    assert answer.meta["probes"] == int(np.ceil(store.ivf.probes / 0.64))
    searching = seqs - 1
    assert not np.isin(searching, np.arange(N)[np.arange(N) % 5 == 4]).any()
    assert not (neighbors == seqs[:, None]).any()
    labelled = np.flatnonzero(np.arange(N) % 5 != 4)
    expected, _ = truth(x, searching, labelled, 10, metric, exclude_self=True)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(neighbors, expected, strict=True)])
    assert recall >= 0.9


def test_small_pages_give_the_answer_large_ones_do(space, monkeypatch):
    store, _, _ = space
    query = JoinQuery(TRIAGE, TRAINING, 5, among_labelled=True)
    _, seqs, neighbors, distances, pages = joined(store, query)
    assert len(pages) == 1
    monkeypatch.setattr(cell_join, "QUERY_ROWS", 120)
    monkeypatch.setattr(cell_join, "CELL_ROWS", 300)
    monkeypatch.setattr(cell_join, "PAGE_QUERIES", 50)
    _, small_seqs, small_neighbors, small_distances, small_pages = joined(store, query)
    assert len(small_pages) > 5
    order = np.argsort(small_seqs)
    np.testing.assert_array_equal(small_seqs[order], seqs)
    np.testing.assert_array_equal(small_neighbors[order], neighbors)
    np.testing.assert_allclose(small_distances[order], distances, rtol=1e-6)


def test_deleted_rows_neither_search_nor_are_found(space):
    store, _, _ = space
    gone = store.delete("s", where=parse({"label": "c1"}))
    gone_triage = store.delete("s", ids=[f"r{i}" for i in range(N, N + 100)])
    _, seqs, neighbors, _, _ = joined(store, JoinQuery(None, TRAINING, 5))
    assert not np.isin(neighbors, gone).any()
    assert not np.isin(seqs, np.concatenate([gone, gone_triage])).any()
    assert len(seqs) == N + 1_000 - len(gone) - 100


def test_a_share_searches_about_that_share_and_columns_come_with_each_page(space):
    store, _, _ = space
    query = JoinQuery(TRIAGE, TRAINING, 3, share=0.25, columns=("id", "inference", "output"))
    answer, seqs, _, _, pages = joined(store, query)
    assert 150 <= len(seqs) <= 350 and answer.rows == len(seqs)
    for page in pages:
        assert page.columns.column_names == ["id", "inference", "output"]
        assert page.columns.column("id").to_pylist() == [f"r{s - 1}" for s in page.seqs]
        assert page.vectors.shape == (len(page.seqs), DIM)
    again = joined(store, query)[1]
    np.testing.assert_array_equal(again, seqs)  # the same rows each time: drawn by seq


def test_an_untrained_space_or_a_metadata_filter_is_left_to_the_caller(tmp_path):
    store = open_ivf(tmp_path, CHROMA_CLICKHOUSE_IVF_TRAIN_ROWS="1000000")
    try:
        store.create_space("s", "l2", {})
        store.add("s", rows(clustered(3_000), 0, "training", lambda i: True))
        space = store.get_space("s")
        assert store.join_neighbors(space, JoinQuery(None, None, 5)) is None
        store.ivf.train(sid_of(store), "l2")
        assert store.join_neighbors(space, JoinQuery(None, None, 5)) is not None
        by_metadata = JoinQuery(parse({"colour": "red"}), None, 5)
        assert store.join_neighbors(space, by_metadata) is None
    finally:
        store.close()


def test_vector_pages_read_every_matching_row_once_a_page_at_a_time(space):
    store, x, _ = space
    pages = list(store.vector_pages("s", TRAINING, labelled=True, rows=700))
    # windows of 700 seqs, read through the primary key: never more than 700 rows a page
    assert len(pages) == int(np.ceil(N / 700)) and all(len(p[0]) <= 700 for p in pages)
    seqs = np.concatenate([p[0] for p in pages])
    np.testing.assert_array_equal(seqs, np.flatnonzero(np.arange(N) % 5 != 4) + 1)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in pages]), x[seqs - 1])
    labels = [label for p in pages for label in p[2].column("label").to_pylist()]
    assert labels == [f"c{s % 3}" for s in seqs - 1]
