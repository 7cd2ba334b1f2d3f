"""Label quality through the store's own neighbour search (ClickHouse with its inverted file
trained): the same verdicts as the in-memory path, without reading the vectors."""

from __future__ import annotations

import time

import numpy as np
import pytest

from chroma_algo_label_quality.confident_learning import label_issues
from chroma_client import Client
from tests.stores import store_environment

CLASSES = 5
N = 3_000


def planted(seed: int = 0, n: int = N, d: int = 16, rate: float = 0.04):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 4.0, (CLASSES, d))
    true = rng.integers(0, CLASSES, n)
    x = (centres[true] + rng.normal(0.0, 1.0, (n, d))).astype(np.float32)
    flipped = rng.random(n) < rate
    given = true.copy()
    given[flipped] = (true[flipped] + rng.integers(1, CLASSES, flipped.sum())) % CLASSES
    return x, np.array([f"class-{c}" for c in given], dtype=object), flipped


@pytest.fixture
def client(tmp_path, monkeypatch):
    for key, value in store_environment("clickhouse", tmp_path / "data").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CHROMA_CLICKHOUSE_IVF_TRAIN_ROWS", "1000")
    c = Client(path=tmp_path / "data")
    yield c
    c.close()


def trained(space, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        index = space.status()["index"]
        if index.get("generation") and not index.get("training"):
            return
        time.sleep(0.2)
    raise AssertionError(f"the inverted file was not trained: {space.status()}")


def test_label_issues_through_the_cells_agree_with_an_exact_search(client):
    x, labels, flipped = planted()
    ids = np.array([f"t{i}" for i in range(N)])
    space = client.space("lq")
    space.add(x, ids=list(ids), context="training", labels=list(labels), dataset="d")
    space.add(x[:100] + 0.5, context="triage", dataset="d")  # not scored, never votes
    trained(space)

    frame = space.run("label_quality", k=10)
    meta = frame.attrs["meta"]
    assert meta["search"].startswith("clickhouse_ivf") and meta["rows"] == N
    assert len(frame) == N and set(frame["id"]) == set(ids)
    assert frame["issue_score"].is_monotonic_decreasing

    exact = label_issues(x, labels, k=10, exact_limit=np.iinfo(np.int64).max)
    got = frame.set_index("id").loc[ids]
    # nearly every row was voted on by the same neighbours as an exact search finds
    close = np.isclose(got["label_quality"].to_numpy(), exact.label_quality, atol=1e-9)
    assert close.mean() >= 0.95
    assert (got["is_issue"].to_numpy() == exact.is_issue).mean() >= 0.98
    np.testing.assert_allclose(
        [meta["per_class"][name]["threshold"] for name in exact.classes],
        exact.thresholds, atol=0.01,
    )  # fmt: skip
    # the planted errors come first
    top = frame["id"].iloc[: int(flipped.sum())]
    assert top.isin(set(ids[flipped])).mean() >= 0.9
    # a row never votes for itself, and only scored rows vote
    for row_id, voters in zip(frame["id"], frame["neighbors"], strict=True):
        assert row_id not in set(voters) and set(voters) <= set(ids)


def test_a_catalogue_filter_goes_into_the_join_and_deleted_rows_neither_score_nor_vote(client):
    x, labels, _ = planted(seed=1)
    space = client.space("lq")
    half = N // 2
    space.add(x[:half], ids=[f"a{i}" for i in range(half)], context="training",
              labels=list(labels[:half]), dataset="a")  # fmt: skip
    space.add(x[half:], ids=[f"b{i}" for i in range(N - half)], context="training",
              labels=list(labels[half:]), dataset="b",
              metadata=[{"shard": i % 2} for i in range(N - half)])  # fmt: skip
    trained(space)
    gone = [f"b{i}" for i in range(0, 200)]
    space.delete(ids=gone)

    frame = space.run("label_quality", k=5, where={"dataset": "b"})
    assert frame.attrs["meta"]["search"].startswith("clickhouse_ivf")
    assert len(frame) == N - half - len(gone) and set(frame["dataset"]) == {"b"}
    voters = {v for row in frame["neighbors"] for v in row}
    assert voters and all(v.startswith("b") for v in voters) and not voters & set(gone)

    # a filter on metadata, which the cells do not hold, is searched in memory
    by_metadata = space.run("label_quality", k=5, where={"shard": 1})
    assert by_metadata.attrs["meta"]["search"] == "exact"
    assert len(by_metadata) == len([i for i in range(200, N - half) if i % 2 == 1])
