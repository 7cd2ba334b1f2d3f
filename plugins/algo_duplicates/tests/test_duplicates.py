import numpy as np
import pandas as pd
import pytest

from chroma_algo_duplicates.pairs import URI_GROUP_PAIRS, embedding_pairs, neighbors, uri_pairs
from chroma_client import Client
from chroma_wire.errors import InvalidInput
from tests.stores import indexed_clickhouse_client, wait_until_indexed

DIM = 32


def clustered(rng, n, dim=DIM, n_clusters=10, spread=0.3, centres=None):
    if centres is None:
        centres = rng.standard_normal((n_clusters, dim)) * 3
    return centres[rng.integers(0, len(centres), n)] + spread * rng.standard_normal((n, dim))


def near(rng, row):
    return row + 0.001 * rng.standard_normal(row.shape)


# (id_a, id_b, kind, by) of every planted pair, the training side first for leakage.
PLANTED = {
    ("a-10", "a-copy", "within_dataset", "embedding"),
    ("a-20", "a-exact", "within_dataset", "embedding"),
    ("a-30", "b-copy", "across_datasets", "embedding"),
    ("a-40", "t-leak", "leakage", "embedding"),
    ("b-5", "t-leak-b", "leakage", "embedding"),
    ("a-50", "b-100", "across_datasets", "input_uri"),
    ("a-60", "a-uri", "within_dataset", "both"),
}


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    client = Client(path=tmp_path_factory.mktemp("duplicates") / "data")
    yield planted(client)
    client.close()


@pytest.fixture(scope="module")
def clickhouse_space(tmp_path_factory):
    """The planted rows on ClickHouse, its inverted file trained: searched by the store."""
    data = tmp_path_factory.mktemp("duplicates_clickhouse") / "data"
    client = indexed_clickhouse_client(data)
    space = planted(client)
    wait_until_indexed(space)
    yield space
    client.close()


def planted(client):
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((10, DIM)) * 3
    a = clustered(rng, 1500, centres=centres)
    b = clustered(rng, 400, centres=centres)
    t = clustered(rng, 300, centres=centres)
    space = client.space("planted")
    uris_a = [f"s3://a/{i}" for i in range(1500)]
    uris_b = [f"s3://b/{i}" for i in range(400)]
    uris_b[100] = "s3://a/50"  # far apart in embedding, same input
    space.add(
        a,
        dataset="a",
        ids=[f"a-{i}" for i in range(1500)],
        labels=[f"c{i % 3}" for i in range(1500)],
        input_uris=uris_a,
    )
    space.add(
        b,
        dataset="b",
        ids=[f"b-{i}" for i in range(400)],
        labels="c0",
        input_uris=uris_b,
    )
    space.add(t, dataset="t", context="triage", ids=[f"t-{i}" for i in range(300)])
    space.add(
        np.stack([near(rng, a[10]), a[20], near(rng, a[60])]),
        dataset="a",
        ids=["a-copy", "a-exact", "a-uri"],
        labels="c1",
        input_uris=[None, None, "s3://a/60"],
    )
    space.add(near(rng, a[30])[None, :], dataset="b", ids=["b-copy"], labels="c0")
    space.add(
        np.stack([near(rng, a[40]), near(rng, b[5])]),
        dataset="t",
        context="triage",
        ids=["t-leak", "t-leak-b"],
        inferences="c2",
    )
    return space


def found(frame):
    return {(r.id_a, r.id_b, r.kind, r.by) for r in frame.itertuples()}


def test_planted_pairs_found_with_their_kind_and_nothing_else(space):
    frame = space.run("duplicates")
    assert found(frame) == PLANTED
    meta = frame.attrs["meta"]
    assert meta["threshold_from"].startswith("median nearest-neighbour distance of training")
    assert meta["threshold"] == pytest.approx(0.1 * meta["median_nn_distance"])
    assert meta["counts"] == {"leakage": 2, "across_datasets": 2, "within_dataset": 3}
    assert meta["rows_checked"] == meta["rows"] == 2206
    # leakage first, then by kind and distance
    assert frame["kind"].tolist()[:2] == ["leakage", "leakage"]
    order = frame["kind"].map({"leakage": 0, "across_datasets": 1, "within_dataset": 2})
    assert list(zip(order, frame["distance"], strict=True)) == sorted(
        zip(order, frame["distance"], strict=True)
    )
    leak = frame[frame["id_b"] == "t-leak"].iloc[0]
    assert (leak.context_a, leak.context_b, leak.dataset_a, leak.dataset_b) == (
        "training",
        "triage",
        "a",
        "t",
    )
    assert leak.label_a == "c1" and pd.isna(leak.label_b)
    exact = frame[frame["id_b"] == "a-exact"].iloc[0]
    assert exact.distance == 0.0
    uri = frame[frame["by"] == "input_uri"].iloc[0]
    assert uri.distance > meta["threshold"] * 10


def test_the_store_search_finds_the_same_pairs_without_reading_every_vector(
    space, clickhouse_space
):
    frame = clickhouse_space.run("duplicates")
    meta = frame.attrs["meta"]
    assert meta["method"].startswith("clickhouse_ivf")
    assert found(frame) == PLANTED
    memory = space.run("duplicates").attrs["meta"]
    # a calibration of 2,000 sampled training rows either way, drawn differently
    assert meta["median_nn_distance"] == pytest.approx(memory["median_nn_distance"], rel=0.05)
    assert meta["counts"] == memory["counts"] and meta["rows"] == memory["rows"]
    exact = frame[frame["id_b"] == "a-exact"].iloc[0]
    assert exact.distance == 0.0
    # a filter and an explicit threshold go into the join too
    leaks = clickhouse_space.run("duplicates", where={"dataset": "t"}, threshold=0.05)
    assert leaks.attrs["meta"]["method"].startswith("clickhouse_ivf")
    assert found(leaks) == {p for p in PLANTED if p[1].startswith("t-")}


def test_explicit_threshold_is_honoured(space):
    exact = space.run("duplicates", threshold=0)
    assert found(exact) == {
        ("a-20", "a-exact", "within_dataset", "embedding"),
        ("a-50", "b-100", "across_datasets", "input_uri"),
        ("a-60", "a-uri", "within_dataset", "input_uri"),
    }
    assert exact.attrs["meta"]["threshold"] == 0.0
    assert exact.attrs["meta"]["threshold_from"] == "given"

    loose = space.run("duplicates", threshold=1.5, k=3)
    assert len(loose) > 100
    assert (loose.loc[loose["by"] != "input_uri", "distance"] <= 1.5).all()
    assert found(exact) <= found(loose) | {("a-60", "a-uri", "within_dataset", "input_uri")}


def test_kinds_n_and_where_restrict_the_answer(space):
    leaks = space.run("duplicates", kinds=["leakage"])
    assert set(leaks["id_b"]) == {"t-leak", "t-leak-b"}
    assert leaks.attrs["meta"]["counts"]["within_dataset"] == 3

    first = space.run("duplicates", n=1)
    assert len(first) == 1 and first["kind"].iloc[0] == "leakage"
    assert first.attrs["meta"]["pairs"] == len(PLANTED)

    triage = space.run("duplicates", where={"context": "triage"})
    assert found(triage) == {p for p in PLANTED if p[2] == "leakage"}
    assert triage.attrs["meta"]["rows_checked"] == 302


def test_a_smaller_ratio_keeps_only_the_closest(space):
    frame = space.run("duplicates", ratio=1e-6)
    assert found(frame) >= {("a-20", "a-exact", "within_dataset", "embedding")}
    assert "a-copy" not in set(frame["id_b"])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"threshold": -1}, "threshold"),
        ({"threshold": "0.1"}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"ratio": 0}, "ratio"),
        ({"ratio": 2}, "ratio"),
        ({"threshold": 0.1, "ratio": 0.1}, "not both"),
        ({"k": 0}, "k must"),
        ({"k": True}, "k must"),
        ({"k": 1000}, "k must"),
        ({"n": 0}, "n must"),
        ({"kinds": []}, "kinds"),
        ({"kinds": ["leak"]}, "'leak'"),
        ({"where": {"context": {"$like": "x"}}}, "like"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_parameters_are_refused(space, params, message):
    with pytest.raises(InvalidInput, match=message):
        space.run("duplicates", **params)


def test_cosine_space_and_empty_space(tmp_path):
    rng = np.random.default_rng(3)
    x = clustered(rng, 600)
    with Client(path=tmp_path / "data") as client:
        empty = client.space("empty", metric="cosine").run("duplicates")
        assert len(empty) == 0 and list(empty.columns)[:2] == ["id_a", "id_b"]

        space = client.space("cos", metric="cosine")
        space.add(x, dataset="d", ids=[f"r{i}" for i in range(600)])
        space.add(3.0 * x[7][None, :], dataset="e", context="triage", ids=["scaled"])
        frame = space.run("duplicates")
        meta = frame.attrs["meta"]
        assert meta["metric"] == "cosine"
        assert meta["threshold"] == pytest.approx(0.01 * meta["median_nn_distance"])
        assert found(frame) == {("r7", "scaled", "leakage", "embedding")}
        assert frame["distance"].iloc[0] == pytest.approx(0.0, abs=1e-9)


def test_inverted_lists_find_the_same_planted_pairs_as_the_exact_scan():
    rng = np.random.default_rng(5)
    x = clustered(rng, 3000, dim=16)
    originals = rng.choice(3000, 40, replace=False)
    x = np.vstack([x, x[originals] + 1e-3 * rng.standard_normal((40, 16))]).astype(np.float32)
    queries = np.arange(len(x))
    exact = neighbors(x, queries, 5, "l2")
    approximate = neighbors(x, queries, 5, "l2", exact_pairs=0)
    assert (exact.method, approximate.method) == ("exact", "inverted lists")
    planted = {(int(o), 3000 + i) for i, o in enumerate(originals)}
    for found_ in (exact, approximate):
        pairs = embedding_pairs(found_, queries, 0.05)
        assert {tuple(p) for p in pairs.tolist()} == planted
    assert not (exact.indices == queries[:, None]).any()


def test_exact_copies_crowding_out_a_row_still_leave_it_out_of_its_neighbors():
    x = np.zeros((8, 4), dtype=np.float32)
    x[7] = 1.0
    found_ = neighbors(x, np.arange(8), 3, "l2")
    assert not (found_.indices == np.arange(8)[:, None]).any()
    assert (found_.distances[:7] == 0).all()


def test_uri_groups_pair_fully_up_to_the_limit_then_with_their_first_row():
    big = URI_GROUP_PAIRS + 4
    codes = np.r_[np.zeros(3), np.full(big, 1), -1, -1, 2].astype(np.int64)
    checked = np.ones(len(codes), dtype=bool)
    pairs, starred = uri_pairs(codes, checked)
    assert starred == 1
    assert len(pairs) == 3 + (big - 1)
    assert {(0, 1), (0, 2), (1, 2)} <= {tuple(p) for p in pairs.tolist()}
    only = np.zeros(len(codes), dtype=bool)
    only[2] = True
    assert {tuple(p) for p in uri_pairs(codes, only)[0].tolist()} == {(0, 2), (1, 2)}
