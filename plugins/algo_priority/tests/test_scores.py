import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from chroma_algo_priority.scores import (
    CONTRIBUTIONS,
    VOTE_WEIGHTS,
    PriorityParams,
    backing_inputs,
    combine,
    contributions,
    priority_scores,
)
from chroma_core import linear_probe
from chroma_core.distance import smallest
from chroma_core.neighbor_search import knn

METRICS = ["l2", "cosine", "ip"]
# what every score carries: the priority, each component behind it, and the neighbours
KEYS = (
    {
        "priority",
        "support",
        "probe_support",
        "vote_weight",
        "novelty",
        "disagreement",
        "neighbors",
    }
    | {  # fmt: skip
        f"{component}{suffix}"
        for component in ("distance", "mahalanobis")
        for suffix in ("", "_pct")
    }
    | set(CONTRIBUTIONS)
)


def brute_force(train, queries, metric):
    train = train.astype(np.float64)
    queries = queries.astype(np.float64)
    if metric == "l2":
        return np.linalg.norm(queries[:, None, :] - train[None, :, :], axis=2)
    if metric == "cosine":
        train = train / np.linalg.norm(train, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return 1.0 - queries @ train.T


def clustered(rng, n, dim, n_clusters=20, spread=0.3):
    centres = rng.standard_normal((n_clusters, dim)) * 3
    return centres[rng.integers(0, n_clusters, n)] + spread * rng.standard_normal((n, dim))


@pytest.mark.parametrize("metric", METRICS)
def test_exact_knn_matches_brute_force(metric):
    rng = np.random.default_rng(0)
    train = rng.standard_normal((400, 12))
    queries = rng.standard_normal((150, 12))
    full = brute_force(train, queries, metric)
    expected = np.argsort(full, axis=1)[:, :7]

    indices, distances = knn(train, queries, 7, metric)

    assert indices.shape == distances.shape == (150, 7)
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(distances, np.take_along_axis(full, expected, axis=1), atol=1e-10)


@pytest.mark.parametrize("metric", METRICS)
def test_exact_knn_exclude_self_matches_brute_force(metric):
    rng = np.random.default_rng(1)
    train = rng.standard_normal((300, 8))
    full = brute_force(train, train, metric)
    np.fill_diagonal(full, np.inf)
    expected = np.argsort(full, axis=1)[:, :5]

    indices, distances = knn(train, train, 5, metric, exclude_self=True)

    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(distances, np.take_along_axis(full, expected, axis=1), atol=1e-10)
    assert not (indices == np.arange(300)[:, None]).any()


def test_exact_knn_float32_distances_are_accurate():
    rng = np.random.default_rng(2)
    train = (rng.standard_normal((200, 16)) + 50).astype(np.float32)
    queries = train[:20].copy()

    _, distances = knn(train, queries, 3, "l2")

    # Each query is a training row: the expanded-product form would leave rounding noise here.
    np.testing.assert_array_equal(distances[:, 0], 0.0)
    assert distances.dtype == np.float64


def test_knn_clips_k_to_available_rows():
    train = np.arange(6, dtype=np.float32).reshape(3, 2)

    indices, distances = knn(train, train[:2], 10, "l2")
    assert indices.shape == distances.shape == (2, 3)

    indices, _ = knn(train, train, 10, "l2", exclude_self=True)
    assert indices.shape == (3, 2)
    np.testing.assert_array_equal(indices, [[1, 2], [0, 2], [1, 0]])


def test_knn_exclude_self_with_duplicates_finds_the_twin():
    train = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0], [9.0, 9.0]])

    indices, distances = knn(train, train, 1, "l2", exclude_self=True)

    np.testing.assert_array_equal(indices[:2, 0], [1, 0])
    np.testing.assert_array_equal(distances[:2, 0], 0.0)


def test_knn_without_queries_returns_empty_arrays():
    indices, distances = knn(np.ones((5, 3)), np.empty((0, 3)), 4, "cosine")
    assert indices.shape == distances.shape == (0, 4)


@pytest.mark.parametrize("metric", METRICS)
def test_inverted_lists_recall_against_exact(metric, caplog):
    rng = np.random.default_rng(3)
    points = clustered(rng, 5_000, 24).astype(np.float32)
    train, queries = points[:4_000], points[4_000:]

    exact, exact_distances = knn(train, queries, 10, metric)
    with caplog.at_level(logging.DEBUG, logger="chroma.neighbor_search"):
        approximate, approximate_distances = knn(train, queries, 10, metric, exact_limit=1)

    assert "lists probed" in caplog.text

    hits = (approximate[:, :, None] == exact[:, None, :]).any(axis=2)
    assert hits.mean() >= 0.95
    # Same distance definition on both paths, e.g. true rather than squared Euclidean.
    found = approximate == exact
    np.testing.assert_allclose(
        approximate_distances[found], exact_distances[found], rtol=1e-12, atol=1e-12
    )
    assert (np.diff(approximate_distances, axis=1) >= 0).all()


def test_recall_target_holds_on_data_without_clusters():
    rng = np.random.default_rng(20)
    # Isotropic noise: nearest neighbours are barely nearer than any other row, the hardest
    # case for a search that scans only a few lists.
    train = rng.standard_normal((20_000, 32)).astype(np.float32)
    queries = rng.standard_normal((500, 32)).astype(np.float32)

    _, exact = knn(train, queries, 10, "l2")
    _, approximate = knn(train, queries, 10, "l2", exact_limit=1)

    assert (approximate <= exact[:, -1:] + 1e-9).mean() >= 0.85


def test_inverted_lists_exclude_self():
    rng = np.random.default_rng(4)
    train = clustered(rng, 2_000, 16).astype(np.float32)

    exact, _ = knn(train, train, 10, "l2", exclude_self=True)
    approximate, _ = knn(train, train, 10, "l2", exclude_self=True, exact_limit=1)

    assert approximate.shape == (2_000, 10)
    assert not (approximate == np.arange(2_000)[:, None]).any()
    assert (approximate[:, :, None] == exact[:, None, :]).any(axis=2).mean() >= 0.95


def test_inverted_lists_exclude_self_among_duplicates():
    rng = np.random.default_rng(15)
    # Every point three times over: each row's nearest neighbours are its two twins.
    base = clustered(rng, 400, 8).astype(np.float32)
    train = np.vstack([base, base, base])

    indices, distances = knn(train, train, 2, "l2", exclude_self=True, exact_limit=1)

    rows = np.arange(len(train))
    assert not (indices == rows[:, None]).any()
    np.testing.assert_array_equal(np.sort(indices % 400, axis=1), np.c_[rows % 400, rows % 400])
    np.testing.assert_array_equal(distances, 0.0)


def test_inverted_lists_fall_back_to_exact_when_probed_lists_are_too_small():
    rng = np.random.default_rng(16)
    train = rng.standard_normal((400, 6))
    queries = rng.standard_normal((30, 6))

    # 20 lists of about 20 rows, 8 probed: fewer than k=300 candidates for every query.
    exact = knn(train, queries, 300, "l2")
    approximate = knn(train, queries, 300, "l2", exact_limit=1)

    np.testing.assert_array_equal(approximate[0], exact[0])
    np.testing.assert_array_equal(approximate[1], exact[1])


def test_inverted_lists_keep_float64_precision():
    rng = np.random.default_rng(17)
    train = rng.standard_normal((3_000, 10)) + 1e4
    queries = train[:50] + 1e-9

    indices, distances = knn(train, queries, 1, "l2", exact_limit=1)

    np.testing.assert_array_equal(indices[:, 0], np.arange(50))
    np.testing.assert_allclose(distances[:, 0], np.sqrt(10) * 1e-9, rtol=1e-3)


def test_inverted_lists_are_deterministic():
    rng = np.random.default_rng(18)
    points = clustered(rng, 3_000, 12)
    first = knn(points[:2_500], points[2_500:], 5, "cosine", exact_limit=1)
    second = knn(points[:2_500], points[2_500:], 5, "cosine", exact_limit=1)

    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_blas_threads_are_restored_after_overlapping_runs():
    before = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    rng = np.random.default_rng(19)
    train = clustered(rng, 3_000, 16)

    def run(_):
        return knn(train, train[:500], 10, "l2", exact_limit=1)[0]

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(run, range(6)))

    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])
    after = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert after == before


def two_blobs(rng, per_class=500, dim=16, separation=8.0):
    offset = np.zeros(dim)
    offset[0] = separation
    a = rng.standard_normal((per_class, dim))
    b = rng.standard_normal((per_class, dim)) + offset
    train_x = np.vstack([a, b]).astype(np.float32)
    train_labels = np.array(["A"] * per_class + ["B"] * per_class, dtype=object)
    return train_x, train_labels, offset


def auc(positive, negative):
    greater = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return greater + 0.5 * ties


def test_planted_wrong_and_out_of_distribution_points_rank_first():
    rng = np.random.default_rng(5)
    train_x, train_labels, offset = two_blobs(rng)
    dim = train_x.shape[1]

    ordinary_a = rng.standard_normal((100, dim))
    ordinary_b = rng.standard_normal((100, dim)) + offset
    wrong = rng.standard_normal((50, dim))
    far = np.zeros(dim)
    far[1:4] = 12.0
    out_of_distribution = rng.standard_normal((50, dim)) + far
    query_x = np.vstack([ordinary_a, ordinary_b, wrong, out_of_distribution])
    inferences = np.array(
        ["A"] * 100 + ["B"] * 100 + ["B"] * 50 + list(rng.choice(["A", "B"], 50)), dtype=object
    )

    scores = priority_scores(train_x, train_labels, query_x, inferences)

    priority = scores["priority"]
    ordinary, wrong_p, ood_p = priority[:200], priority[200:250], priority[250:]
    assert wrong_p.mean() >= ordinary.mean() + 0.25
    assert ood_p.mean() >= ordinary.mean() + 0.25
    assert auc(priority[200:], ordinary) >= 0.95
    # Each component sees what it is meant to see.
    assert scores["disagreement"][200:250].mean() > 0.9
    assert scores["distance_pct"][250:].min() == 1.0
    assert scores["mahalanobis_pct"][200:].mean() > 0.95


def test_disagreement_is_exactly_zero_or_one():
    rng = np.random.default_rng(6)
    train_x, train_labels, offset = two_blobs(rng)
    query_x = np.vstack([np.zeros(16), np.zeros(16), offset])
    inferences = np.array(["A", "B", "B"], dtype=object)

    scores = priority_scores(train_x, train_labels, query_x, inferences)

    assert scores["disagreement"].tolist() == [0.0, 1.0, 0.0]


def line_data():
    # Ten points on a line, six "a" then four "b", and two far away so k=10 is the ten.
    train_x = np.array([[i] for i in range(10)] + [[100.0], [101.0]])
    train_labels = np.array(list("aaaaaabbbb") + ["c", "c"], dtype=object)
    return train_x, train_labels


def test_disagreement_counts_neighbor_labels():
    train_x, train_labels = line_data()
    query_x = np.full((3, 1), 4.5)
    inferences = np.array(["a", "b", None], dtype=object)

    scores = priority_scores(train_x, train_labels, query_x, inferences)

    np.testing.assert_allclose(scores["disagreement"], [0.4, 0.6, 0.4])
    assert set(scores["neighbors"][0].tolist()) == set(range(10))


def test_neighbor_uncertainty_when_inference_is_missing():
    train_x, train_labels = line_data()
    query_x = np.array([[100.5], [5.5]])

    scores = priority_scores(
        train_x, train_labels, query_x, np.array([None, None]), params=PriorityParams(k=2)
    )

    # Both neighbours of 100.5 are "c": no uncertainty. Around 5.5, a split vote.
    np.testing.assert_allclose(scores["disagreement"], [0.0, 0.5])


def test_components_match_their_definitions():
    rng = np.random.default_rng(7)
    train_x = rng.standard_normal((120, 5))
    train_labels = rng.choice(np.array(["x", "y", "z"], dtype=object), 120)
    query_x = rng.standard_normal((30, 5)) * 2
    inferences = rng.choice(np.array(["x", "y", "z", None], dtype=object), 30)
    params = PriorityParams(k=4, shrinkage=0.3)

    scores = priority_scores(train_x, train_labels, query_x, inferences, params=params)

    _, own = knn(train_x, train_x, 4, "l2", exclude_self=True)
    _, theirs = knn(train_x, query_x, 4, "l2")
    expected_pct = (own.mean(1)[None, :] <= theirs.mean(1)[:, None]).mean(axis=1)
    np.testing.assert_allclose(scores["distance"], theirs.mean(1))
    np.testing.assert_allclose(scores["distance_pct"], expected_pct)

    classes = np.array(["x", "y", "z"])
    means = np.array([train_x[train_labels == c].mean(0) for c in classes])
    centred = train_x - means[np.searchsorted(classes, train_labels.astype(str))]
    pooled = centred.T @ centred / (120 - 3)
    shrunk = 0.7 * pooled + 0.3 * np.trace(pooled) / 5 * np.eye(5)
    diff = query_x[:, None, :] - means[None, :, :]
    to_each = np.sqrt(
        np.einsum("qcd,qcd->qc", diff, np.linalg.solve(shrunk, diff[..., None])[..., 0])
    )
    expected = np.array(
        [
            to_each[i].min() if c is None else to_each[i, list(classes).index(c)]
            for i, c in enumerate(inferences)
        ]
    )
    np.testing.assert_allclose(scores["mahalanobis"], expected, rtol=1e-9)

    k = scores["neighbors"].shape[1]
    agreeing = (1 - scores["disagreement"]) * k
    np.testing.assert_allclose(scores["support"], (agreeing + 1) / (k + len(classes)))
    edge = np.quantile(own.mean(1), 0.99)
    np.testing.assert_allclose(
        scores["novelty"], np.clip(scores["distance"] / edge - 1, 0, 1), atol=1e-6
    )
    # the probe's p(inference | x); with no inference, its most likely class's
    probe = linear_probe.fit(train_x, np.searchsorted(classes, train_labels.astype(str)), 3)
    p = probe.probabilities(query_x)
    expected_probe = np.array(
        [
            p[i].max() if c is None else p[i, list(classes).index(c)]
            for i, c in enumerate(inferences)
        ]
    )
    np.testing.assert_allclose(scores["probe_support"], expected_probe)
    weight = scores["vote_weight"]
    assert len(set(weight)) == 1 and weight[0] in VOTE_WEIGHTS
    backing = weight * scores["support"] + (1 - weight) * scores["probe_support"]
    np.testing.assert_allclose(scores["priority"], 1 - backing * (1 - scores["novelty"]))


def test_scores_are_bounded_and_shaped():
    rng = np.random.default_rng(8)
    train_x = clustered(rng, 300, 10).astype(np.float32)
    train_labels = rng.choice(np.array(["p", "q"], dtype=object), 300)
    query_x = np.vstack([clustered(rng, 60, 10), rng.standard_normal((20, 10)) * 50])
    inferences = rng.choice(np.array(["p", "q", None], dtype=object), 80)

    scores = priority_scores(train_x, train_labels, query_x, inferences, metric="cosine")

    assert set(scores) == KEYS
    for key in KEYS - {"neighbors"}:
        assert scores[key].shape == (80,)
        assert scores[key].dtype == np.float64
        assert np.isfinite(scores[key]).all()
    for key in ("priority", "disagreement", "distance_pct", "mahalanobis_pct"):
        assert ((scores[key] >= 0) & (scores[key] <= 1)).all()
    assert scores["neighbors"].shape == (80, 10)
    assert ((scores["neighbors"] >= 0) & (scores["neighbors"] < 300)).all()


def test_approximate_path_agrees_with_exact():
    rng = np.random.default_rng(9)
    train_x, train_labels, offset = two_blobs(rng, per_class=300)
    query_x = np.vstack([rng.standard_normal((100, 16)), rng.standard_normal((100, 16)) + offset])
    inferences = np.array(["A", "B"] * 100, dtype=object)

    exact = priority_scores(train_x, train_labels, query_x, inferences)
    approximate = priority_scores(
        train_x, train_labels, query_x, inferences, params=PriorityParams(exact_limit=0)
    )

    np.testing.assert_allclose(approximate["mahalanobis"], exact["mahalanobis"])
    assert np.abs(approximate["priority"] - exact["priority"]).mean() < 0.02


def test_distance_percentile_from_a_sample_of_the_training_rows():
    rng = np.random.default_rng(21)
    train_x = clustered(rng, 3_000, 12)
    train_labels = rng.choice(np.array(["a", "b", "c"], dtype=object), 3_000)
    query_x = np.vstack([clustered(rng, 150, 12), rng.standard_normal((50, 12)) * 20])
    inferences = rng.choice(np.array(["a", "b"], dtype=object), 200)

    full = priority_scores(train_x, train_labels, query_x, inferences)
    sampled = priority_scores(
        train_x, train_labels, query_x, inferences, params=PriorityParams(reference_rows=1_000)
    )
    larger = priority_scores(
        train_x, train_labels, query_x, inferences, params=PriorityParams(reference_rows=10**6)
    )

    # A sample of 1,000 rows estimates each percentile to within a few hundredths.
    assert np.abs(sampled["distance_pct"] - full["distance_pct"]).max() < 0.06
    assert (sampled["distance_pct"] * 1_000 == np.round(sampled["distance_pct"] * 1_000)).all()
    np.testing.assert_array_equal(sampled["distance"], full["distance"])
    np.testing.assert_array_equal(sampled["mahalanobis_pct"], full["mahalanobis_pct"])
    # At least as many reference rows as training rows: every row is used, as by default.
    for key in KEYS:
        np.testing.assert_array_equal(larger[key], full[key])


def test_inference_outside_training_labels_is_maximally_unfamiliar():
    rng = np.random.default_rng(10)
    train_x, train_labels, _ = two_blobs(rng, per_class=50)
    query_x = np.zeros((2, 16))
    inferences = np.array(["C", None], dtype=object)

    scores = priority_scores(train_x, train_labels, query_x, inferences)

    assert scores["mahalanobis_pct"][0] == 1.0
    assert scores["disagreement"][0] == 1.0
    # Without a usable class both fall back to the nearest class mean.
    assert scores["mahalanobis"][0] == scores["mahalanobis"][1]
    assert scores["mahalanobis_pct"][1] < 1.0


def test_single_member_class():
    rng = np.random.default_rng(11)
    train_x = rng.standard_normal((40, 4))
    train_labels = np.array(["big"] * 39 + ["lonely"], dtype=object)
    query_x = np.vstack([train_x[-1], train_x[0]])
    inferences = np.array(["lonely", "lonely"], dtype=object)

    scores = priority_scores(train_x, train_labels, query_x, inferences)

    assert scores["mahalanobis"][0] == pytest.approx(0.0, abs=1e-9)
    assert scores["mahalanobis"][1] > 0
    assert all(np.isfinite(v).all() for v in scores.values())


def test_every_class_a_singleton():
    train_x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    train_labels = np.array(["a", "b", "c"], dtype=object)

    scores = priority_scores(train_x, train_labels, train_x, train_labels)

    np.testing.assert_allclose(scores["mahalanobis"], 0.0, atol=1e-12)
    assert all(np.isfinite(v).all() for v in scores.values())


@pytest.mark.parametrize("exact_limit", [PriorityParams().exact_limit, 0])
def test_identical_points(exact_limit):
    train_x = np.ones((20, 3), dtype=np.float32)
    train_labels = np.array(["a", "b"] * 10, dtype=object)
    query_x = np.ones((2, 3), dtype=np.float32)
    inferences = np.array(["a", None], dtype=object)

    scores = priority_scores(
        train_x, train_labels, query_x, inferences, params=PriorityParams(exact_limit=exact_limit)
    )

    np.testing.assert_array_equal(scores["distance"], 0.0)
    np.testing.assert_array_equal(scores["distance_pct"], 1.0)
    np.testing.assert_allclose(scores["mahalanobis"], 0.0, atol=1e-9)
    assert all(np.isfinite(v).all() for v in scores.values())


def test_more_dimensions_than_rows():
    rng = np.random.default_rng(12)
    train_x = rng.standard_normal((15, 200)).astype(np.float32)
    train_labels = rng.choice(np.array(["a", "b"], dtype=object), 15)
    query_x = rng.standard_normal((5, 200)).astype(np.float32)

    scores = priority_scores(train_x, train_labels, query_x, np.array(["a"] * 5, dtype=object))

    assert np.isfinite(scores["mahalanobis"]).all()
    assert scores["neighbors"].shape == (5, 10)


def test_two_training_rows_clip_k():
    train_x = np.array([[0.0], [1.0]])
    train_labels = np.array(["a", "b"], dtype=object)

    scores = priority_scores(train_x, train_labels, np.array([[0.2]]), np.array(["a"]))

    assert scores["neighbors"].shape == (1, 1)
    assert scores["neighbors"][0, 0] == 0
    assert scores["disagreement"][0] == 0.0


def test_no_queries_returns_empty_arrays():
    rng = np.random.default_rng(13)
    train_x = rng.standard_normal((30, 4))
    train_labels = rng.choice(np.array(["a", "b"], dtype=object), 30)

    scores = priority_scores(train_x, train_labels, np.empty((0, 4)), np.array([], dtype=object))

    assert set(scores) == KEYS
    for key in KEYS - {"neighbors"}:
        assert scores[key].shape == (0,)
    assert scores["neighbors"].shape == (0, 10)


def valid_inputs():
    rng = np.random.default_rng(14)
    train_x = rng.standard_normal((10, 3))
    train_labels = np.array(["a", "b"] * 5, dtype=object)
    return train_x, train_labels, rng.standard_normal((4, 3)), np.array(["a"] * 4, dtype=object)


def test_error_fewer_than_two_training_rows():
    train_x, train_labels, query_x, inferences = valid_inputs()
    with pytest.raises(ValueError, match="at least 2"):
        priority_scores(train_x[:1], train_labels[:1], query_x, inferences)


def test_error_dimension_mismatch():
    train_x, train_labels, query_x, inferences = valid_inputs()
    with pytest.raises(ValueError, match="dimension mismatch"):
        priority_scores(train_x, train_labels, query_x[:, :2], inferences)
    with pytest.raises(ValueError, match="dimension mismatch"):
        knn(train_x, query_x[:, :2], 3, "l2")


@pytest.mark.parametrize("where", ["train", "query"])
def test_error_nan_input(where):
    train_x, train_labels, query_x, inferences = valid_inputs()
    (train_x if where == "train" else query_x)[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        priority_scores(train_x, train_labels, query_x, inferences)


def test_error_unknown_metric():
    train_x, train_labels, query_x, inferences = valid_inputs()
    with pytest.raises(ValueError, match="unknown metric 'manhattan'"):
        priority_scores(train_x, train_labels, query_x, inferences, metric="manhattan")
    with pytest.raises(ValueError, match="unknown metric"):
        knn(train_x, query_x, 3, "dot")


def test_error_unlabelled_training_rows_and_length_mismatch():
    train_x, train_labels, query_x, inferences = valid_inputs()
    train_labels[3] = None
    with pytest.raises(ValueError, match="None"):
        priority_scores(train_x, train_labels, query_x, inferences)
    with pytest.raises(ValueError, match="query_inferences must have shape"):
        priority_scores(train_x, np.array(["a", "b"] * 5), query_x, inferences[:3])


def test_combine_needs_both_backers_and_lets_novelty_through():
    support = np.array([0.9, 0.9, 0.9, 0.1])
    novelty = np.array([0.0, 0.0, 1.0, 0.0])
    confidence = np.array([0.9, 0.1, 0.9, np.nan])

    priority = combine(support, novelty, confidence)

    # backed by both: low; the model doubting alone is enough to raise it
    assert priority[0] == pytest.approx(0.1)
    assert priority[1] == pytest.approx(1 - np.sqrt(0.09))
    # far outside the training data: first, whatever the backing
    assert priority[2] == pytest.approx(1.0)
    # no outputs: the neighbours' support alone
    assert priority[3] == pytest.approx(0.9)
    np.testing.assert_allclose(combine(support, novelty), 1 - support * (1 - novelty))


def test_far_inputs_with_agreeing_neighbors_still_rank_above_ordinary_ones():
    rng = np.random.default_rng(11)
    train_x, train_labels, offset = two_blobs(rng)
    dim = train_x.shape[1]
    ordinary = rng.standard_normal((100, dim))
    far = rng.standard_normal((20, dim)) + offset * 6  # beyond blob B, nearest to it
    query_x = np.vstack([ordinary, far])
    inferences = np.array(["A"] * 100 + ["B"] * 20, dtype=object)

    scores = priority_scores(train_x, train_labels, query_x, inferences)

    assert scores["disagreement"][100:].max() == 0.0
    assert scores["novelty"][100:].min() == 1.0
    assert scores["priority"][100:].min() > scores["priority"][:100].max()


def test_contributions_split_the_priority_between_its_signals():
    nan = float("nan")
    scores = {
        # a doubted vote; a doubted probe; doubted confidence; novel; all backed; no outputs
        "support": np.array([0.2, 0.95, 0.95, 0.95, 1.0, 0.2]),
        "probe_support": np.array([0.95, 0.2, 0.95, 0.95, 1.0, nan]),
        "vote_weight": np.full(6, 0.5),
        "novelty": np.array([0.0, 0.0, 0.0, 0.9, 0.0, 0.0]),
        "confidence": np.array([0.95, 0.95, 0.1, 0.95, 1.0, nan]),
    }
    shares = contributions(scores)
    assert set(shares) == set(CONTRIBUTIONS)
    table = np.column_stack([shares[name] for name in CONTRIBUTIONS])
    assert np.allclose(table[[0, 1, 2, 3, 5]].sum(axis=1), 1.0)
    assert (table[4] == 0).all()  # priority 0: nothing to share out
    assert table.argmax(axis=1)[:4].tolist() == [0, 1, 2, 3]
    # without outputs and probe, the votes and novelty are all there is
    assert shares["from_confidence"][5] == 0 and shares["from_probe"][5] == 0
    assert shares["from_votes"][5] == pytest.approx(1.0)
    # -log(1 - priority) is the sum the shares are taken of
    priority = combine(backing_inputs(scores), scores["novelty"], scores["confidence"])
    inputs = backing_inputs(scores)
    total = -np.log(1 - priority[0])
    assert shares["from_confidence"][0] * total == pytest.approx(-0.5 * np.log(0.95))
    assert (shares["from_votes"][0] + shares["from_probe"][0]) * total == pytest.approx(
        -0.5 * np.log(inputs[0])
    )


def test_priority_scores_carry_contributions_that_sum_to_one():
    rng = np.random.default_rng(3)
    train = np.vstack([rng.normal(3, 1, (200, 8)), rng.normal(-3, 1, (200, 8))])
    labels = np.array(["a"] * 200 + ["b"] * 200, dtype=object)
    queries = np.vstack([rng.normal(3, 1, (20, 8)), rng.normal(30, 1, (5, 8))])
    inferences = np.array(["b"] * 10 + ["a"] * 15, dtype=object)
    scores = priority_scores(train, labels, queries, inferences, params=PriorityParams(k=10))
    table = np.column_stack([scores[name] for name in CONTRIBUTIONS])
    positive = scores["priority"] > 0
    assert np.allclose(table[positive].sum(axis=1), 1.0)
    # wrong inferences among the a's: doubt from the training inputs; far rows: novelty
    assert (table[:10, :2].sum(axis=1) > 0.9).all()
    assert (scores["from_novelty"][20:] > 0.9).all()


@pytest.mark.parametrize("seed", range(6))
def test_smallest_selects_the_k_lowest_of_each_row_ties_and_infinities_included(seed):
    rng = np.random.default_rng(seed)
    m, n = int(rng.integers(1, 40)), int(rng.integers(1, 60))
    scores = rng.integers(0, 6, size=(m, n)).astype(np.float32)  # many ties
    scores[rng.random((m, n)) < 0.2] = np.inf
    for k in {1, max(1, n // 2), n, n + 3}:
        picked = smallest(scores, k)
        width = min(k, n)
        assert picked.shape == (m, width)
        # distinct columns, and their values are the row's lowest
        assert all(len(set(row)) == width for row in picked)
        values = np.sort(np.take_along_axis(scores, picked, axis=1), axis=1)
        np.testing.assert_array_equal(values, np.sort(scores, axis=1)[:, :width])


def test_smallest_places_nan_last_as_argpartition_does():
    scores = np.array([[3.0, np.nan, 1.0, 2.0]])
    assert sorted(smallest(scores, 3)[0]) == [0, 2, 3]
