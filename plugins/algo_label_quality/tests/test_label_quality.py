"""Planted label errors in clustered embeddings must come out on top."""

from __future__ import annotations

import numpy as np
import pytest

from chroma_algo_label_quality.confident_learning import label_issues
from chroma_client import Client
from chroma_wire.errors import InvalidFilter, InvalidInput
from tests.stores import indexed_clickhouse_client, wait_until_indexed

CLASSES = 5


def planted(n: int = 2000, d: int = 16, rate: float = 0.03, seed: int = 0):
    """Five well separated Gaussian clusters; ``rate`` of the labels moved to another class."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 4.0, (CLASSES, d))
    true = rng.integers(0, CLASSES, n)
    x = (centres[true] + rng.normal(0.0, 1.0, (n, d))).astype(np.float32)
    flipped = rng.random(n) < rate
    given = true.copy()
    given[flipped] = (true[flipped] + rng.integers(1, CLASSES, flipped.sum())) % CLASSES
    return x, true, given, flipped, centres


def names(codes: np.ndarray) -> np.ndarray:
    return np.array([f"class-{c}" for c in codes], dtype=object)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    pos, neg = scores[positive], scores[~positive]
    greater = (pos[:, None] > neg[None, :]).mean()
    return float(greater + 0.5 * (pos[:, None] == neg[None, :]).mean())


@pytest.mark.parametrize("weighting", ["distance", "uniform"])
def test_flipped_labels_rank_first_and_get_their_true_class(weighting):
    x, true, given, flipped, _ = planted()
    found = label_issues(x, names(given), k=10, weighting=weighting)

    assert auroc(found.issue_score, flipped) > 0.95
    top = np.argsort(-found.issue_score, kind="stable")[: int(flipped.sum())]
    assert flipped[top].mean() >= 0.9
    assert found.is_issue.sum() > 0
    assert flipped[found.is_issue].mean() >= 0.9  # precision of the flags
    assert found.is_issue[flipped].mean() >= 0.5  # recall of the flags
    suggested = found.classes[found.suggested[flipped]]
    assert (suggested == names(true[flipped])).mean() >= 0.9
    np.testing.assert_allclose(found.issue_score, 1.0 - found.label_quality)
    assert ((found.label_quality > 0) & (found.label_quality < 1)).all()


def test_row_at_its_cluster_centre_is_not_flagged():
    x, _, given, _, centres = planted()
    x = np.vstack([x, centres[2:3].astype(np.float32)])
    labels = names(np.append(given, 2))
    found = label_issues(x, labels, k=10)
    assert not found.is_issue[-1]
    assert found.classes[found.suggested[-1]] == "class-2"
    assert found.label_quality[-1] > found.thresholds[2]


def test_a_row_never_votes_for_itself():
    x = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]], dtype=np.float32)
    labels = names(np.array([0, 0, 1, 1, 1, 1]))
    found = label_issues(x, labels, k=2, weighting="uniform", probe=False)
    assert (found.neighbors != np.arange(6)[:, None]).all()
    # row 2 sits among class 0; its own label 1 must not rescue it
    assert found.is_issue[2] and found.classes[found.suggested[2]] == "class-0"
    assert np.argmax(found.issue_score) == 2


def test_exact_duplicates_can_be_kept_from_voting():
    x, _, given, _, centres = planted(seed=1)
    intruder = centres[0] + 0.01
    x = np.vstack([x, intruder, intruder]).astype(np.float32)
    labels = names(np.append(given, [3, 3]))
    # the neighbour votes alone: a twin with the same wrong label vouches for it
    kept = label_issues(x, labels, k=10, probe=False)
    assert not kept.is_issue[-1]
    excluded = label_issues(x, labels, k=10, exclude_duplicates=True, probe=False)
    assert excluded.is_issue[-2:].all()
    assert excluded.neighbors[-1].tolist().count(len(x) - 2) == 0
    assert (excluded.classes[excluded.suggested[-2:]] == "class-0").all()


def test_inverted_lists_agree_with_the_exact_search():
    x, _, given, flipped, _ = planted(n=3000)
    exact = label_issues(x, names(given), k=10, probe=False)
    approximate = label_issues(x, names(given), k=10, exact_limit=1000, probe=False)
    assert exact.search == "exact" and approximate.search == "inverted lists"
    assert auroc(approximate.issue_score, flipped) > 0.95
    assert (exact.is_issue == approximate.is_issue).mean() > 0.99


def linear(n: int = 3000, d: int = 64, rate: float = 0.1, seed: int = 0):
    """Isotropic Gaussian rows split by one hyperplane: the neighbours of a row in 64
    dimensions straddle the boundary at random, the boundary itself is clean."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    true = (x @ rng.normal(size=d) > 0).astype(int)
    flipped = rng.random(n) < rate
    return x, true, np.where(flipped, 1 - true, true), flipped


def test_the_probe_wins_where_the_neighbour_vote_is_noisy_but_the_boundary_is_clean():
    x, true, given, flipped = linear()
    votes = label_issues(x, names(given), k=10, probe=False)
    mixed = label_issues(x, names(given), k=10)
    assert auroc(votes.issue_score, flipped) < 0.85  # the votes are noisy here
    assert auroc(mixed.issue_score, flipped) > 0.95
    assert auroc(mixed.issue_score, flipped) > auroc(votes.issue_score, flipped) + 0.1
    # the mix leans on the signal that predicts the given labels better
    assert mixed.vote_weight <= 0.25
    assert mixed.log_loss["probe"] < mixed.log_loss["votes"]
    assert mixed.log_loss["mixed"] <= min(mixed.log_loss["probe"], mixed.log_loss["votes"])
    np.testing.assert_allclose(votes.label_quality, mixed.vote_quality)
    assert flipped[mixed.is_issue].mean() >= 0.8
    assert (mixed.classes[mixed.suggested[flipped]] == names(true[flipped])).mean() >= 0.9


def test_with_the_probe_planted_errors_in_clusters_still_rank_first():
    x, true, given, flipped, _ = planted()
    found = label_issues(x, names(given), k=10)
    assert found.probe is not None and found.probe_quality is not None
    assert auroc(found.issue_score, flipped) > 0.95
    assert flipped[found.is_issue].mean() >= 0.9 and found.is_issue[flipped].mean() >= 0.5
    # each signal's own p(given) is kept, and the mix lies between them
    low = np.minimum(found.vote_quality, found.probe_quality)
    high = np.maximum(found.vote_quality, found.probe_quality)
    assert ((found.label_quality >= low - 1e-12) & (found.label_quality <= high + 1e-12)).all()


def test_bad_arguments_raise_value_errors():
    x = np.zeros((4, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="at least 2 classes"):
        label_issues(x, names(np.zeros(4, int)))
    with pytest.raises(ValueError, match="k must be"):
        label_issues(x, names(np.array([0, 0, 1, 1])), k=0)
    with pytest.raises(ValueError, match="None"):
        label_issues(x, np.array(["a", None, "b", "b"], dtype=object))
    with pytest.raises(ValueError, match="weighting"):
        label_issues(x, names(np.array([0, 0, 1, 1])), weighting="gaussian")


# --- through the public client -------------------------------------------------------


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.setenv("CHROMA_SIMILARITY_BUILD", "lazy")
    c = Client(path=tmp_path / "data")
    yield c
    c.close()


def fill(space, seed: int, dataset: str, n: int = 1000):
    x, true, given, flipped, _ = planted(n=n, seed=seed)
    ids = [f"{dataset}-{i}" for i in range(n)]
    space.add(x, dataset=dataset, context="training", labels=list(names(given)), ids=ids)
    return np.array(ids), true, given, flipped


def test_client_run_ranks_planted_errors(client):
    space = client.space("labels")
    ids, true, _, flipped = fill(space, seed=3, dataset="a", n=2000)
    rng = np.random.default_rng(9)
    space.add(rng.normal(size=(50, 16)).astype(np.float32), dataset="a", context="triage")
    space.add(
        rng.normal(size=(20, 16)).astype(np.float32), dataset="a", context="training"
    )  # unlabelled: not scored

    frame = space.run("label_quality", k=10)

    assert list(frame.columns) == [
        "id",
        "dataset",
        "label",
        "suggested_label",
        "label_quality",
        "issue_score",
        "is_issue",
        "vote_quality",
        "probe_quality",
        "neighbors",
    ]
    assert len(frame) == 2000 and set(frame["id"]) == set(ids)
    assert frame["issue_score"].is_monotonic_decreasing
    meta = frame.attrs["meta"]
    assert meta["rows"] == 2000 and meta["classes"] == CLASSES and meta["k"] == 10
    assert meta["issues"] == int(frame["is_issue"].sum()) > 0
    planted_ids = set(ids[flipped])
    top = frame["id"].iloc[: len(planted_ids)]
    assert top.isin(planted_ids).mean() >= 0.9
    truth = dict(zip(ids, names(true), strict=True))
    flagged = frame[frame["id"].isin(planted_ids) & frame["is_issue"]]
    assert (flagged["suggested_label"] == flagged["id"].map(truth)).mean() >= 0.9
    first = frame.iloc[0]
    assert len(first["neighbors"]) == 10 and first["id"] not in set(first["neighbors"])
    assert set(first["neighbors"]) <= set(ids)

    issues = space.run("label_quality", k=10, only_issues=True, n=5)
    assert len(issues) == 5 and issues["is_issue"].all()
    assert issues["id"].tolist() == frame[frame["is_issue"]]["id"].iloc[:5].tolist()


def test_where_restricts_scoring_and_voting_to_one_dataset(client):
    space = client.space("two_sets")
    ids_a, *_ = fill(space, seed=4, dataset="a", n=600)
    fill(space, seed=5, dataset="b", n=400)

    frame = space.run("label_quality", k=5, where={"dataset": "b"})

    assert len(frame) == 400 and set(frame["dataset"]) == {"b"}
    assert frame.attrs["meta"]["rows"] == 400
    voters = {i for row in frame["neighbors"] for i in row}
    assert voters and all(i.startswith("b-") for i in voters)
    assert len(space.run("label_quality", k=5)) == 1000


def test_bad_parameters_and_data_raise_invalid_input(client):
    space = client.space("errors")
    rng = np.random.default_rng(0)
    space.add(rng.normal(size=(10, 4)).astype(np.float32), dataset="x", context="triage")
    with pytest.raises(InvalidInput, match="no labelled training inputs"):
        space.run("label_quality")
    space.add(
        rng.normal(size=(10, 4)).astype(np.float32), dataset="x", context="training", labels="cat"
    )
    with pytest.raises(InvalidInput, match="at least 2"):
        space.run("label_quality")
    space.add(
        rng.normal(size=(10, 4)).astype(np.float32), dataset="y", context="training", labels="dog"
    )
    assert len(space.run("label_quality", k=3)) == 20
    with pytest.raises(InvalidInput, match="no labelled training inputs matching where"):
        space.run("label_quality", where={"dataset": "z"})
    for k in (0, -1, 1001, 2.5, "10", True):
        with pytest.raises(InvalidInput, match="k must be"):
            space.run("label_quality", k=k)
    with pytest.raises(InvalidInput, match="k is required"):
        space.run("label_quality", k=None)
    with pytest.raises(InvalidInput, match="n must be"):
        space.run("label_quality", n=0)
    with pytest.raises(InvalidInput, match="only_issues"):
        space.run("label_quality", only_issues="yes")
    with pytest.raises(InvalidInput, match="weighting"):
        space.run("label_quality", weighting="gaussian")
    with pytest.raises(InvalidInput, match="unknown parameter"):
        space.run("label_quality", top=3)
    with pytest.raises(InvalidFilter):
        space.run("label_quality", where={"dataset": {"$regex": "x"}})
    with pytest.raises(InvalidInput, match="where must be a dict"):
        space.run("label_quality", where="dataset = x")


# --- through the store's neighbour join (ClickHouse, its inverted file trained) ----------

N = 3_000


@pytest.fixture
def indexed(tmp_path):
    with indexed_clickhouse_client(tmp_path / "data") as opened:
        yield opened


def test_label_issues_through_the_cells_agree_with_an_exact_search(indexed):
    x, _, given, flipped, _ = planted(n=N, rate=0.04)
    labels = names(given)
    ids = np.array([f"t{i}" for i in range(N)])
    space = indexed.space("lq")
    space.add(x, ids=list(ids), context="training", labels=list(labels), dataset="d")
    space.add(x[:100] + 0.5, context="triage", dataset="d")  # not scored, never votes
    wait_until_indexed(space)

    frame = space.run("label_quality", k=10)
    meta = frame.attrs["meta"]
    assert meta["search"].startswith("clickhouse_ivf") and meta["rows"] == N
    assert len(frame) == N and set(frame["id"]) == set(ids)
    assert frame["issue_score"].is_monotonic_decreasing

    # a space joined in the store is scored by its votes alone
    assert "skipped" in meta["probe"] and frame["probe_quality"].isna().all()
    exact = label_issues(x, labels, k=10, exact_limit=np.iinfo(np.int64).max, probe=False)
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


def test_a_catalogue_filter_goes_into_the_join_and_deleted_rows_neither_score_nor_vote(indexed):
    x, _, given, _, _ = planted(n=N, rate=0.04, seed=1)
    labels = names(given)
    space = indexed.space("lq")
    half = N // 2
    space.add(x[:half], ids=[f"a{i}" for i in range(half)], context="training",
              labels=list(labels[:half]), dataset="a")  # fmt: skip
    space.add(x[half:], ids=[f"b{i}" for i in range(N - half)], context="training",
              labels=list(labels[half:]), dataset="b",
              metadata=[{"shard": i % 2} for i in range(N - half)])  # fmt: skip
    wait_until_indexed(space)
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
