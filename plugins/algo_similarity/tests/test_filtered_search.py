"""Filtered search: exact over the matching rows, kept exact as rows are added and deleted."""

from __future__ import annotations

import numpy as np
import pytest
from test_similarity_index import add, clustered, service

from chroma_algo_similarity.matches import MatchCache, Matches
from chroma_core.distance import exact_knn
from chroma_core.filters import parse


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_matches_search_equals_exact_knn(metric):
    rng = np.random.default_rng(1)
    data = rng.normal(size=(500, 12)).astype(np.float32)
    seqs = np.arange(1000, 1500)
    queries = rng.normal(size=(7, 12)).astype(np.float32)
    found, dists = Matches.build(seqs, data, metric, 1499).search(queries, 10, metric)
    truth, truth_dists = exact_knn(queries, data, 10, metric)
    assert (found == seqs[truth]).all()
    np.testing.assert_allclose(dists, truth_dists, rtol=1e-4, atol=1e-4)


def test_fewer_matches_than_k_are_padded():
    data = np.eye(3, dtype=np.float32)
    found, dists = Matches.build(np.array([5, 6, 7]), data, "l2", 7).search(data[:1], 5, "l2")
    assert found[0].tolist() == [5, 6, 7, -1, -1]
    assert np.isinf(dists[0, 3:]).all()


def rare_neighbors(chroma, queries, k=5):
    result = chroma.nearest_neighbors("s", queries=queries, k=k, where={"dataset": "rare"})
    return result.table.column("id").to_pylist(), result.meta


def test_filtered_queries_are_exact_and_see_new_and_deleted_rows(tmp_path):
    data = clustered(4000)
    dataset = np.where(np.arange(4000) % 10 == 0, "rare", "common")
    chroma = service(tmp_path)
    chroma.space("s")
    add(chroma, "s", data, dataset=dataset.tolist())
    query = data[:1] + 0.01
    rare = np.nonzero(dataset == "rare")[0]
    truth, _ = exact_knn(query, data[rare], 5, "l2")
    first, meta = rare_neighbors(chroma, query)
    assert meta["method"] == "exact"
    assert first == [f"rs{i}" for i in rare[truth[0]]]

    # a new matching row right on the query is found by the next query
    add(chroma, "s", query.copy(), ids=["new"], dataset=["rare"])
    assert rare_neighbors(chroma, query)[0][0] == "new"
    # a matching row added under another dataset is not
    add(chroma, "s", query.copy(), ids=["other"], dataset=["common"])
    assert "other" not in rare_neighbors(chroma, query)[0]
    # deleted rows are gone from the next answer
    chroma.delete("s", ids=["new", first[0]])
    after, _ = rare_neighbors(chroma, query)
    assert "new" not in after and first[0] not in after
    assert after[:4] == first[1:5]
    chroma.close()


def test_broad_filters_go_to_the_index(tmp_path):
    data = clustered(3000)
    chroma = service(tmp_path, similarity_exact_limit=100)
    chroma.space("s")
    add(chroma, "s", data, dataset=["rare" if i % 10 else "common" for i in range(3000)])
    _, meta = rare_neighbors(chroma, data[:1])
    assert meta["method"] in ("hnsw_filtered", "exact") and meta.get("candidates") != 2700
    chroma.close()


class Store:
    """Just the store calls the cache makes, over an in-memory table, counting reads."""

    def __init__(self, data: np.ndarray, rare: np.ndarray):
        self.data, self.rare, self.reads, self.top = data, rare, 0, len(data)

    def max_seq(self, space):
        return self.top

    def count(self, space, where):
        return int(self.rare[: self.top].sum())

    def vectors(self, space, where=None, after_seq=None):
        self.reads += 1
        seqs = np.nonzero(self.rare)[0] + 1
        seqs = seqs[seqs > (after_seq or 0)]
        return seqs, self.data[seqs - 1]


class Space:
    name, metric, space_id = "s", "l2", 1


def test_cache_reads_the_store_once_then_only_new_rows_and_keeps_to_its_budget():
    rng = np.random.default_rng(2)
    data = rng.normal(size=(1000, 8)).astype(np.float32)
    rare = np.arange(1000) % 4 == 0
    store = Store(data, rare)
    store.top = 800
    where = parse({"dataset": "rare"})
    cache = MatchCache(budget=1 << 20)
    first = cache.matches(store, Space, where, limit=10_000)
    # rows beyond max_seq (committed after it was read) wait for the next use
    assert first.seqs.max() <= 800 and len(first.seqs) == 200
    assert cache.matches(store, Space, where, limit=10_000) is first and store.reads == 1
    store.top = 1000
    grown = cache.matches(store, Space, where, limit=10_000)
    assert len(grown.seqs) == 250 and store.reads == 2
    cache.remove("s", grown.seqs[:10])
    assert len(cache.matches(store, Space, where, limit=10_000).seqs) == 240
    assert cache.matches(store, Space, where, limit=100) is None
    small = MatchCache(budget=first.nbytes // 2)
    small.matches(store, Space, where, limit=10_000)
    assert small.size == 0 and not small.entries


def test_an_entry_read_before_a_delete_is_not_kept():
    data = np.ones((40, 4), np.float32)
    store = Store(data, np.ones(40, bool))
    cache = MatchCache(budget=1 << 20)
    where = parse({"dataset": "rare"})
    original = store.vectors

    def delete_meanwhile(space, where=None, after_seq=None):
        found = original(space, where, after_seq)
        cache.remove("s", np.array([1]))
        return found

    store.vectors = delete_meanwhile
    assert len(cache.matches(store, Space, where, limit=100).seqs) == 40
    assert not cache.entries
