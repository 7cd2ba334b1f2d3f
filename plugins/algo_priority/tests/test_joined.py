"""Priority through the store's own neighbour search (ClickHouse with its inverted file
trained): the same scores as the in-memory path, read a page at a time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from chroma_algo_priority.scores import Mahalanobis, Moments, priority_scores
from chroma_core.neighbor_search import Workers
from tests.stores import indexed_clickhouse_client, wait_until_indexed

DIM = 16
TRAIN = 3_000
TRIAGE = 500


def data(seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 3, size=(4, DIM))
    train_true = rng.integers(0, 3, TRAIN)
    labels = np.array([f"c{c}" for c in train_true], dtype=object)
    labels[rng.random(TRAIN) < 0.05] = "c0"  # some labels wrong
    train_x = means[train_true] + rng.normal(size=(TRAIN, DIM))
    triage_true = rng.integers(0, 4, TRIAGE)  # class 3 is never seen in training
    wrong = rng.random(TRIAGE) < 0.1
    inference = np.where(wrong, (triage_true + 1) % 3, np.minimum(triage_true, 2))
    triage_x = means[triage_true] + rng.normal(size=(TRIAGE, DIM))
    return (
        train_x.astype(np.float32),
        labels,
        triage_x.astype(np.float32),
        np.array([f"c{c}" for c in inference], dtype=object),
    )


@pytest.fixture
def client(tmp_path):
    with indexed_clickhouse_client(tmp_path / "data") as opened:
        yield opened


def test_priorities_through_the_cells_agree_with_the_in_memory_scores(client):
    train_x, labels, triage_x, inference = data()
    space = client.space("p")
    unlabelled = np.arange(TRAIN) % 10 == 9
    space.add(
        train_x,
        ids=[f"t{i}" for i in range(TRAIN)],
        context="training",
        labels=[None if gone else label for gone, label in zip(unlabelled, labels, strict=True)],
        dataset="d",
    )
    space.add(
        triage_x,
        ids=[f"q{i}" for i in range(TRIAGE)],
        context="triage",
        inferences=list(inference),
        dataset="d",
    )
    wait_until_indexed(space)
    meta = space.compute_priorities()
    assert meta["search"]["method"] == "clickhouse_ivf" and meta["scored"] == TRIAGE
    assert meta["training"] == int((~unlabelled).sum())
    got = space.priorities(n=None).set_index("id").loc[[f"q{i}" for i in range(TRIAGE)]]

    expected = priority_scores(train_x[~unlabelled], labels[~unlabelled], triage_x, inference)
    # the class model is the same, from moments summed page by page
    np.testing.assert_allclose(got["mahalanobis"], expected["mahalanobis"], rtol=1e-6)
    np.testing.assert_allclose(got["mahalanobis_pct"], expected["mahalanobis_pct"], atol=1e-9)
    # the neighbours come from the probed cells: nearly all the true ones
    assert np.abs(got["disagreement"] - expected["disagreement"]).mean() <= 0.03
    assert np.abs(got["distance"] / expected["distance"] - 1).mean() <= 0.02
    assert np.corrcoef(got["priority"], expected["priority"])[0, 1] >= 0.98


def test_only_new_rows_are_scored_again_through_the_cells(client):
    train_x, labels, triage_x, inference = data(1)
    space = client.space("p")
    space.add(train_x, ids=[f"t{i}" for i in range(TRAIN)], context="training",
              labels=list(labels), dataset="d")  # fmt: skip
    space.add(triage_x[:-50], ids=[f"q{i}" for i in range(TRIAGE - 50)],
              context="triage", inferences=list(inference[:-50]), dataset="d")  # fmt: skip
    wait_until_indexed(space)
    first = space.compute_priorities()
    assert first["scored"] == TRIAGE - 50
    before = space.priorities(n=None).set_index("id")
    space.add(triage_x[-50:], ids=[f"q{i}" for i in range(TRIAGE - 50, TRIAGE)],
              context="triage", inferences=list(inference[-50:]), dataset="d")  # fmt: skip
    again = space.compute_priorities(only_new=True)
    assert again["scored"] == 50 and again["kept"] == TRIAGE - 50
    after = space.priorities(n=None).set_index("id")
    assert len(after) == TRIAGE
    pd.testing.assert_series_equal(after.loc[before.index, "priority"], before["priority"])


def test_moments_summed_page_by_page_give_the_model_of_all_rows():
    rng = np.random.default_rng(3)
    # far from the origin, where a second moment about zero would cancel
    x = (1_000.0 + rng.normal(size=(5_000, 8)) * rng.uniform(0.5, 2, 8)).astype(np.float32)
    codes = rng.integers(0, 4, 5_000)
    with Workers() as workers:
        whole = Mahalanobis.of_rows(x, codes, 4, 0.1, workers)
        moments = Moments(8)
        seen: dict[int, int] = {}
        for part in np.array_split(np.arange(5_000), 7):
            # classes numbered as they are first met, then put in order
            local = np.array([seen.setdefault(int(c), len(seen)) for c in codes[part]])
            moments.add(x[part], local, len(seen), workers)
        moments.reorder(np.array([seen[c] for c in range(4)]))
        paged = Mahalanobis.of_moments(moments, 0.1, workers)
        np.testing.assert_allclose(paged.means, whole.means, rtol=1e-9)
        np.testing.assert_allclose(
            paged.to_class(x[:200], codes[:200]), whole.to_class(x[:200], codes[:200]), rtol=1e-6
        )
