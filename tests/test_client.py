"""The public client, run identically embedded and against a real server."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from chroma_client import Space, Trigger
from chroma_client.errors import (
    Conflict,
    DimensionMismatch,
    InvalidFilter,
    InvalidInput,
    NotFound,
)
from chroma_core.distance import exact_knn


def vectors(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def snapshot(space) -> pd.DataFrame:
    frame = space.get(include_embeddings=True)
    return frame.assign(embedding=[e.tobytes() for e in frame["embedding"]])


# --- spaces -------------------------------------------------------------------
def test_space_is_created_once_and_listed_with_dimension_and_count(client, space_name):
    space = client.space(space_name, metric="cosine", model={"name": "resnet18", "layer": "fc"})
    again = client.space(space_name, metric="cosine")
    assert again.name == space.name
    listed = client.spaces().set_index("name").loc[space_name]
    assert listed["metric"] == "cosine" and pd.isna(listed["dim"]) and listed["count"] == 0
    assert listed["model"] == {"name": "resnet18", "layer": "fc"}
    space.add(vectors(5, 12), dataset="d")
    listed = client.spaces().set_index("name").loc[space_name]
    assert listed["dim"] == 12 and listed["count"] == 5
    assert space.info().dim == 12


def test_space_with_another_metric_or_bad_name_is_refused(client, space_name):
    client.space(space_name, metric="l2")
    with pytest.raises(Conflict, match="metric"):
        client.space(space_name, metric="ip")
    with pytest.raises(InvalidInput, match="unknown metric"):
        client.space(space_name + "x", metric="manhattan")
    with pytest.raises(InvalidInput, match="invalid space name"):
        client.space("../etc/passwd")


def test_delete_space_drops_rows_and_unknown_space_is_not_found(client, space_name):
    space = client.space(space_name)
    space.add(vectors(3), dataset="d")
    client.delete_space(space_name)
    assert space_name not in set(client.spaces()["name"])
    with pytest.raises(NotFound, match=space_name):
        space.count()
    with pytest.raises(NotFound):
        client.delete_space(space_name)
    with pytest.raises(NotFound, match="never_made"):
        Space(client, "never_made_" + space_name[:20]).count()
    recreated = client.space(space_name)
    assert recreated.count() == 0


# --- adding and reading -------------------------------------------------------
def test_add_round_trips_every_field(client, space_name):
    space = client.space(space_name)
    emb = vectors(4, 6)
    outputs = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [1.0, 0.0]], dtype=np.float32)
    ids = space.add(
        emb,
        dataset="cifar",
        context="triage",
        input_uris=[f"s3://b/{i}.png" for i in range(4)],
        inferences=[0, 1, 1, 0],
        outputs=outputs,
        labels=["0", "0", None, "1"],
        metadata=[{"conf": 0.9, "ok": True}, {}, None, {"tags": ["a", "b"], "n": 3}],
        ids=["a", "b", "c", "d"],
    )
    assert ids == ["a", "b", "c", "d"]
    got = space.get(include_embeddings=True).set_index("id").loc[ids]
    assert got["dataset"].tolist() == ["cifar"] * 4
    assert got["context"].tolist() == ["triage"] * 4
    assert got["input_uri"].tolist() == [f"s3://b/{i}.png" for i in range(4)]
    assert got["inference"].tolist() == ["0", "1", "1", "0"]
    assert [None if pd.isna(v) else v for v in got["label"]] == ["0", "0", None, "1"]
    assert got["metadata"].tolist() == [
        {"conf": 0.9, "ok": True},
        {},
        {},
        {"tags": ["a", "b"], "n": 3},
    ]
    np.testing.assert_array_equal(np.stack(got["embedding"].to_numpy()), emb)
    np.testing.assert_array_equal(np.stack(got["output"].to_numpy()), outputs)


def test_generated_ids_are_unique_and_returned_in_order(client, space_name):
    space = client.space(space_name)
    ids = space.add(vectors(50), dataset="d")
    assert len(set(ids)) == 50
    assert space.get(ids=ids[10:13])["id"].tolist() == ids[10:13]


@pytest.mark.parametrize("kind", ["list", "series", "arrow_table", "arrow_array", "dataframe"])
def test_add_accepts_what_users_hold(client, space_name, kind):
    emb = vectors(5, 4)
    holders = {
        "list": emb.tolist(),
        "series": pd.Series(list(emb)),
        "arrow_table": pa.table(
            {"embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 4)}
        ),
        "arrow_array": pa.array(emb.tolist(), pa.list_(pa.float32())),
        "dataframe": pd.DataFrame(emb, columns=list("abcd")),
    }
    space = client.space(space_name)
    meta = pd.DataFrame({"score": [1.5, 2.5, 3.5, 4.5, 5.5], "split": ["x"] * 5})
    ids = space.add(holders[kind], dataset="d", labels=np.arange(5), metadata=meta)
    _, stored = space.embeddings(ids=ids)
    np.testing.assert_allclose(stored, emb, rtol=1e-6)
    assert space.count(where={"score": {"$gt": 3}}) == 3
    assert space.count(where={"label": 4}) == 1


def test_large_adds_go_in_batches(client, space_name):
    client.batch_rows = 7
    space = client.space(space_name)
    ids = space.add(vectors(30), dataset="d")
    assert space.count() == 30 and len(ids) == 30


def test_long_loads_show_progress_when_asked_and_stay_quiet_in_scripts(client, space_name, capsys):
    client.batch_rows = 10
    space = client.space(space_name)
    space.add(vectors(30), dataset="d", progress=True)
    err = capsys.readouterr().err
    assert f"add to {space_name}" in err and "100%" in err
    space.add(vectors(30), dataset="d")
    assert capsys.readouterr().err == ""
    assert space.count() == 60


def test_per_row_fields_convert_from_what_users_hold(client, space_name):
    space = client.space(space_name)
    ids = space.add(
        vectors(6),
        dataset=np.array(["a", "b"] * 3),
        context=pd.Series(["x", "y"] * 3, dtype="category"),
        input_uris=pd.Series(["u0", None, "u2", np.nan, "u4", pd.NA], dtype=object),
        inferences=np.array([0.0, 1.0, np.nan, 3.0, 4.0, 5.0]),
        labels=[True, False, None, 1, "cat", 2.5],
        ids=pa.chunked_array([["i0", "i1"], ["i2", "i3", "i4", "i5"]]),
    )
    assert ids == [f"i{i}" for i in range(6)]
    frame = space.get(ids=ids).set_index("id").loc[ids]

    def texts(column):
        return [v if isinstance(v, str) else None for v in frame[column]]

    assert texts("dataset") == ["a", "b"] * 3
    assert texts("context") == ["x", "y"] * 3
    assert texts("input_uri") == ["u0", None, "u2", None, "u4", None]
    assert texts("inference") == ["0", "1", None, "3", "4", "5"]
    assert texts("label") == ["true", "false", None, "1", "cat", "2.5"]
    assert space.add(vectors(1), dataset="d", ids=7) == ["7"]


def test_a_batched_add_checks_every_batch_before_sending_any(client, space_name):
    client.batch_rows = 10
    space = client.space(space_name)
    ids = [f"r{i}" for i in range(40)]
    with pytest.raises(InvalidInput, match="ids must not be empty"):
        space.add(vectors(40), dataset="d", ids=[*ids[:39], ""])
    with pytest.raises(InvalidInput, match="context must not be None"):
        space.add(vectors(40), dataset="d", context=["training"] * 39 + [None])
    assert space.count() == 0


# --- bad input stores nothing ---------------------------------------------------
def test_bad_input_raises_typed_errors_and_stores_nothing(client, space_name):
    space = client.space(space_name)
    space.add(vectors(3, 8), dataset="d", ids=["x", "y", "z"], labels=["a", "b", "c"])
    before = snapshot(space)
    bad = vectors(2, 8)
    bad[1, 3] = np.nan
    cases = [
        (DimensionMismatch, "dimension", lambda: space.add(vectors(2, 9), dataset="d")),
        (DimensionMismatch, "mixed", lambda: space.add([[1.0, 2.0], [1.0]], dataset="d")),
        (InvalidInput, "NaN", lambda: space.add(bad, dataset="d")),
        (InvalidInput, "infinite", lambda: space.add(np.full((1, 8), np.inf), dataset="d")),
        (
            InvalidInput,
            "labels has 3 values for 2",
            lambda: space.add(vectors(2), dataset="d", labels=[1, 2, 3]),
        ),
        (InvalidInput, "must hold numbers", lambda: space.add([["a"] * 8], dataset="d")),
        (InvalidInput, "2-D", lambda: space.add(vectors(1)[0], dataset="d")),
        (InvalidInput, "empty", lambda: space.add(np.zeros((0, 8)), dataset="d")),
        (
            InvalidInput,
            "metadata of row 0",
            lambda: space.add(vectors(1), dataset="d", metadata=["no"]),
        ),
        (InvalidInput, "duplicates", lambda: space.add(vectors(2), dataset="d", ids=["q", "q"])),
        (Conflict, "'y'", lambda: space.add(vectors(2), dataset="d", ids=["new", "y"])),
        (InvalidInput, "dataset", lambda: space.add(vectors(1), dataset=None)),
        (InvalidFilter, "unknown operator", lambda: space.count(where={"label": {"$regex": "a"}})),
        (InvalidFilter, "invalid field name", lambda: space.get(where={"x') OR 1=1 --": 1})),
        (InvalidFilter, "unknown operator", lambda: space.delete(where={"$drop": []})),
        (InvalidInput, "k must be", lambda: space.nearest_neighbors(vectors(1), k=0)),
        (DimensionMismatch, "dimension", lambda: space.nearest_neighbors(vectors(1, 3))),
        (NotFound, "nope", lambda: space.nearest_neighbors(ids=["nope"])),
        (InvalidInput, "ids or where", lambda: space.delete()),
        (NotFound, "unknown algorithm", lambda: space.run("no_such_algorithm")),
    ]
    for error, message, call in cases:
        with pytest.raises(error, match=message):
            call()
    pd.testing.assert_frame_equal(snapshot(space), before)


def test_filter_injection_in_values_matches_nothing(client, space_name):
    space = client.space(space_name)
    space.add(vectors(3), dataset="d", labels=["a", "b", "c"])
    for attack in ["a' OR '1'='1", 'a"; DROP TABLE rows; --', "%", "*"]:
        assert space.count(where={"label": attack}) == 0
        assert space.count(where={"label": {"$in": [attack]}}) == 0
    assert space.count() == 3


# --- filters ----------------------------------------------------------------------
def test_where_operators(client, space_name):
    space = client.space(space_name)
    space.add(
        vectors(6),
        dataset=["a", "a", "b", "b", "c", "c"],
        context=["training"] * 3 + ["triage"] * 3,
        labels=[0, 1, 0, 1, None, 1],
        metadata=[{"score": s, "flag": s > 2} for s in range(5)] + [{}],
    )
    count = space.count
    assert count({"dataset": "a"}) == 2
    assert count({"dataset": {"$ne": "a"}}) == 4
    assert count({"dataset": {"$in": ["a", "c"]}}) == 4
    assert count({"dataset": {"$nin": ["a", "c"]}}) == 2
    assert count({"score": {"$gte": 2}}) == 3
    assert count({"score": {"$lt": 2}}) == 2
    assert count({"score": {"$gt": 1, "$lte": 3}}) == 2
    assert count({"flag": True}) == 2
    assert count({"label": None}) == 1
    assert count({"label": {"$ne": None}}) == 5
    assert count({"$and": [{"context": "triage"}, {"label": 1}]}) == 2
    assert count({"$or": [{"dataset": "a"}, {"score": 4}]}) == 3
    assert count({"$or": [{"$and": [{"dataset": "b"}, {"label": 0}]}, {"dataset": "c"}]}) == 3


def test_where_on_a_field_no_input_has_is_an_error_naming_the_fields(client, space_name):
    space = client.space(space_name)
    space.add(vectors(4), dataset="a", labels=["x", "y", "x", "y"], metadata=[{"score": 1}] * 4)
    space.add(vectors(2), dataset="p", context="triage", inferences="x")
    with pytest.raises(InvalidFilter) as typo:
        space.get(where={"contxt": "training"})
    message = str(typo.value)
    assert "'contxt'" in message and "did you mean 'context'?" in message
    assert (
        "catalogue fields: id, dataset, context" in message and "metadata fields: score" in message
    )
    with pytest.raises(InvalidFilter, match="'scor'.*did you mean 'score'"):
        space.count(where={"scor": {"$gt": 0}})
    with pytest.raises(InvalidFilter, match="'contxt'"):
        space.delete(where={"contxt": "training"})
    assert space.count() == 6  # nothing was deleted
    space.compute_priorities()
    with pytest.raises(InvalidFilter, match="priorities takes min_priority for that"):
        space.priorities(where={"priority": {"$gt": 0.5}})
    # a field that exists but matches nothing is an empty answer, as before
    assert space.count(where={"score": 2}) == 0 and space.get(where={"score": 2}).empty
    assert space.priorities(where={"dataset": "nowhere"}).empty
    # nested in $or with a field that matches: no error, since rows were found
    assert space.count(where={"$or": [{"dataset": "a"}, {"contxt": 1}]}) == 4


def test_get_limit_offset_and_delete(client, space_name):
    space = client.space(space_name)
    ids = space.add(vectors(10), dataset="d", labels=[i % 2 for i in range(10)])
    assert space.get(limit=3, offset=2)["id"].tolist() == ids[2:5]
    assert space.delete(ids=ids[:2]) == 2
    assert space.delete(where={"label": 1}) == 4
    assert space.delete(ids=["missing"]) == 0
    assert space.count() == 4
    assert set(space.get()["id"]) == {ids[i] for i in (2, 4, 6, 8)}


# --- neighbours ---------------------------------------------------------------
@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_nearest_neighbors_agree_with_exact_search(client, space_name, metric):
    space = client.space(space_name, metric=metric)
    data = vectors(300, 16, seed=1)
    ids = np.array(space.add(data, dataset="d"))
    queries = vectors(5, 16, seed=2)
    found = space.nearest_neighbors(queries, k=5)
    assert list(found.columns) == [
        "query",
        "rank",
        "id",
        "distance",
        "input_uri",
        "dataset",
        "context",
        "inference",
        "label",
    ]
    truth, distance = exact_knn(queries, data, 5, metric)
    for q in range(5):
        rows = found[found["query"] == q].sort_values("rank")
        assert rows["id"].tolist() == ids[truth[q]].tolist()
        np.testing.assert_allclose(rows["distance"], distance[q], rtol=1e-4, atol=1e-4)


def test_more_neighbours_than_one_call_returns_are_asked_in_batches(
    client, space_name, monkeypatch
):
    space = client.space(space_name)
    data = vectors(200, 8, seed=5)
    ids = space.add(data, dataset="d")
    whole = space.nearest_neighbors(data[:10], k=5)
    by_id = space.nearest_neighbors(ids=ids[:10], k=4)
    assert "calls" not in whole.attrs["meta"]
    # as if a call returned 20 neighbours at most: 4 queries a call, or 5 ids
    monkeypatch.setattr("chroma_client.client.MAX_NEIGHBORS", 20)
    batched = space.nearest_neighbors(data[:10], k=5)
    assert batched.attrs["meta"]["calls"] == 3
    pd.testing.assert_frame_equal(batched, whole, check_like=False)
    assert sorted(set(batched["query"])) == list(range(10))
    by_id_batched = space.nearest_neighbors(ids=ids[:10], k=4)
    assert by_id_batched.attrs["meta"]["calls"] == 2
    pd.testing.assert_frame_equal(by_id_batched, by_id)


def test_nearest_neighbors_of_stored_ids_exclude_the_input_itself(client, space_name):
    space = client.space(space_name)
    data = vectors(100, 8, seed=3)
    ids = space.add(data, dataset="d")
    found = space.nearest_neighbors(ids=ids[:3], k=4)
    assert len(found) == 12
    for i in range(3):
        rows = found[found["query"] == ids[i]]
        assert ids[i] not in set(rows["id"])
        truth, _ = exact_knn(data[i : i + 1], data, 5, "l2")
        assert rows["id"].tolist() == [ids[j] for j in truth[0][1:]]


def test_filtered_neighbors_return_k_when_k_rows_match(client, space_name):
    space = client.space(space_name)
    data = vectors(2000, 8, seed=4)
    datasets = np.where(np.arange(2000) % 100 == 0, "rare", "common")
    ids = np.array(space.add(data, dataset=datasets))
    found = space.nearest_neighbors(vectors(2, 8, seed=5), k=20, where={"dataset": "rare"})
    assert (found.groupby("query").size() == 20).all()
    assert set(found["dataset"]) == {"rare"}
    rare = np.nonzero(datasets == "rare")[0]
    truth, _ = exact_knn(vectors(2, 8, seed=5), data[rare], 20, "l2")
    assert found[found["query"] == 0]["id"].tolist() == ids[rare][truth[0]].tolist()
    assert found.attrs["meta"]["method"] in ("exact", "clickhouse_exact")


def test_neighbors_in_an_empty_space_are_an_empty_frame(client, space_name):
    found = client.space(space_name).nearest_neighbors(vectors(2), k=3)
    assert found.empty and "distance" in found.columns


def test_status_reports_the_index_and_wait_for_index_returns_when_caught_up(client, space_name):
    space = client.space(space_name)
    empty = space.status()
    assert empty["space"]["count"] == 0 and empty["index"]["pending"] == 0
    data = vectors(500, 8, seed=9)
    ids = space.add(data, dataset="d")
    found = space.nearest_neighbors(data[:3], k=1)
    assert found.sort_values("query")["id"].tolist() == ids[:3]
    status = space.wait_for_index(timeout=60)
    assert status["space"]["count"] == 500
    assert status["index"]["indexed"] == 500 and status["index"]["pending"] == 0


def test_deleted_rows_are_never_neighbors(client, space_name):
    space = client.space(space_name)
    data = vectors(200, 8, seed=6)
    ids = space.add(data, dataset="d")
    space.nearest_neighbors(data[:1], k=1)  # builds the index
    space.delete(ids=ids[:50])
    found = space.nearest_neighbors(data[:10], k=10)
    assert not set(found["id"]) & set(ids[:50])
    assert (found.groupby("query").size() == 10).all()


# --- priorities and triggers ---------------------------------------------------
def two_class_space(client, name):
    rng = np.random.default_rng(7)
    space = client.space(name)
    a = rng.normal(0, 1, size=(200, 8)) + 4
    b = rng.normal(0, 1, size=(200, 8)) - 4
    space.add(
        np.vstack([a, b]),
        dataset="train",
        labels=["a"] * 200 + ["b"] * 200,
        input_uris=[f"img/train/{i}.png" for i in range(400)],
    )
    ordinary = rng.normal(0, 1, size=(40, 8)) + 4
    wrong = rng.normal(0, 1, size=(5, 8)) + 4
    far = rng.normal(0, 1, size=(5, 8)) + 40
    ids = space.add(
        np.vstack([ordinary, wrong, far]),
        dataset="prod",
        context="triage",
        inferences=["a"] * 40 + ["b"] * 5 + ["a"] * 5,
        input_uris=[f"img/prod/{i}.png" for i in range(50)],
    )
    return space, ids[:40], ids[40:]


def test_priorities_rank_wrong_and_far_inputs_first_and_trigger_records_them(client, space_name):
    space, ordinary, planted = two_class_space(client, space_name)
    summary = space.compute_priorities(k=10)
    assert summary["scored"] == 50
    top = space.priorities(n=50)
    assert top["priority"].is_monotonic_decreasing
    assert {"disagreement", "distance_pct", "mahalanobis_pct", "input_uri"} <= set(top.columns)
    assert set(top["id"].head(10)) == set(planted)
    by_id = top.set_index("id")["priority"]
    assert by_id[planted].mean() - by_id[ordinary].mean() > 0.3
    assert (
        space.priorities(n=5, where={"dataset": "prod"})["id"].tolist()
        == top["id"].head(5).tolist()
    )

    trigger = space.trigger_retraining(n=10, note="weekly relabel")
    assert isinstance(trigger, Trigger)
    assert trigger.count == 10 and trigger.status == "pending" and trigger.note == "weekly relabel"
    assert trigger.deliveries["manifest"]["ok"] is True
    items = client.trigger_items(trigger.id)
    assert set(items["id"]) == set(planted)
    assert items["priority"].is_monotonic_decreasing
    assert client.triggers(space=space_name)["id"].tolist() == [trigger.id]
    moved = client.set_trigger_status(trigger.id, "acknowledged")
    assert moved.status == "acknowledged"
    assert client.triggers(space=space_name, status="acknowledged")["id"].tolist() == [trigger.id]
    assert client.triggers(space=space_name, status="pending").empty
    with pytest.raises(InvalidInput, match="status"):
        client.set_trigger_status(trigger.id, "shipped")
    with pytest.raises(NotFound):
        client.set_trigger_status(10**9, "done")
    # the far inputs lie outside the training data: novelty lifts them to the top
    far = planted[5:]
    assert (by_id[far] == 1.0).all() and (by_id.drop(far) < 0.99).all()
    above = space.trigger_retraining(min_priority=0.99)
    assert above.count == 5
    assert set(client.trigger_items(above.id)["id"]) == set(far)


def test_a_diverse_trigger_skips_copies_of_one_hard_case(client, space_name):
    space, ordinary, planted = two_class_space(client, space_name)
    rng = np.random.default_rng(11)
    # ten near-copies of one far-out, misclassified input: each one ties for the top of the
    # ranking with the five planted far inputs
    copy = rng.normal(0, 1, size=8) + 60
    copies = space.add(
        copy + rng.normal(0, 1e-3, size=(10, 8)),
        dataset="prod",
        context="triage",
        inferences="b",
    )
    space.compute_priorities(k=10)
    top = space.trigger_retraining(n=8)
    assert len(set(client.trigger_items(top.id)["id"]) & set(copies)) >= 3
    diverse = space.trigger_retraining(n=8, strategy="diverse")
    picked = client.trigger_items(diverse.id)["id"].tolist()
    assert len(picked) == 8
    assert len(set(picked) & set(copies)) == 1
    assert set(picked) & set(planted)
    record = diverse.selection
    assert record["strategy"] == "diverse" and record["duplicates_skipped"] >= 9
    assert {d["id"] for d in record["duplicates"]} | set(picked) >= set(copies)
    with pytest.raises(InvalidInput, match="strategy"):
        space.trigger_retraining(n=3, strategy="random")
    with pytest.raises(InvalidInput, match="duplicate_radius"):
        space.trigger_retraining(n=3, duplicate_radius=0.5)
    with pytest.raises(InvalidInput, match="needs n"):
        space.trigger_retraining(min_priority=0.1, strategy="diverse")


def test_explain_shows_the_training_neighbors_behind_a_score(client, space_name):
    space, ordinary, planted = two_class_space(client, space_name)
    space.compute_priorities(k=10)
    # planted[0] sits among class "a" training inputs but the model said "b"
    why = space.explain(planted[0], k=7)
    assert why.id == planted[0]
    assert why.priority == pytest.approx(
        float(space.priorities(n=None).set_index("id").loc[planted[0], "priority"])
    )
    assert why.components["disagreement"] == pytest.approx(1.0)
    shares = [why.components[f"from_{s}"] for s in ("votes", "probe", "confidence", "novelty")]
    assert sum(shares) == pytest.approx(1.0)
    # the training inputs around it back "a": the doubt comes from them
    assert why.components["from_votes"] + why.components["from_probe"] > 0.5
    assert len(why.neighbors) == 7 and why.neighbors["rank"].tolist() == list(range(7))
    assert set(why.neighbors["context"]) == {"training"}
    assert why.label_votes == {"a": 7}
    first_training = space.get(where={"context": "training"}, limit=1)["id"].iloc[0]
    trained = space.explain(first_training, k=3)
    assert trained.priority is None and first_training not in set(trained.neighbors["id"])
    with pytest.raises(NotFound):
        space.explain("no-such-id")


def test_label_issues_rank_flipped_training_labels_first(client, space_name):
    rng = np.random.default_rng(5)
    space = client.space(space_name)
    data = np.vstack([rng.normal(4, 1, (150, 8)), rng.normal(-4, 1, (150, 8))])
    labels = np.array(["a"] * 150 + ["b"] * 150, dtype=object)
    flipped = [3, 77, 160, 222]
    labels[flipped] = ["b", "b", "a", "a"]
    ids = space.add(data, dataset="train", labels=labels)
    space.add(rng.normal(4, 1, (5, 8)), dataset="prod", context="triage", inferences="a")
    every = space.label_issues(k=10, only_issues=False)
    assert len(every) == 300 and every["issue_score"].is_monotonic_decreasing
    assert set(every["id"].head(4)) == {ids[i] for i in flipped}
    top = every.set_index("id").loc[[ids[i] for i in flipped]]
    assert top["is_issue"].all()
    assert top["suggested_label"].tolist() == ["a", "a", "b", "b"]
    # by default the issues alone, as every["is_issue"] flags them, in the same order
    issues = space.label_issues(k=10)
    assert issues["is_issue"].all() and set(issues["id"]) >= {ids[i] for i in flipped}
    assert issues["id"].tolist() == every[every["is_issue"]]["id"].tolist()
    with pytest.raises(InvalidInput, match="k"):
        space.label_issues(k=0)


def test_add_without_a_dataset_files_the_inputs_under_default(client, space_name):
    space = client.space(space_name)
    ids = space.add(np.eye(3, 4, dtype=np.float32), labels=["a", "b", "a"])
    assert space.get(ids=ids)["dataset"].tolist() == ["default"] * 3
    assert space.count(where={"dataset": "default"}) == 3


def test_duplicates_and_drift_through_the_client(client, space_name):
    rng = np.random.default_rng(9)
    space = client.space(space_name)
    train = rng.normal(0, 1, (400, 16))
    ids = space.add(train, dataset="train", labels=["a"] * 200 + ["b"] * 200)
    # a triage copy of a training input is leakage; a moved dataset has drifted
    (leak,) = space.add(train[7:8] + 1e-4, dataset="same", context="triage", inferences="a")
    space.add(rng.normal(0, 1, (200, 16)), dataset="same", context="triage", inferences="a")
    space.add(rng.normal(3, 1, (200, 16)), dataset="moved", context="triage", inferences="a")
    pairs = space.duplicates()
    leakage = pairs[pairs["kind"] == "leakage"]
    assert {(a, b) for a, b in zip(leakage["id_a"], leakage["id_b"], strict=True)} == {
        (ids[7], leak)
    }
    assert pairs.attrs["meta"]["threshold"] > 0
    drift = space.drift(seed=1)
    overall = drift[drift["class"].isna()].set_index("dataset")
    assert bool(overall.loc["moved", "drifted"]) and not bool(overall.loc["same", "drifted"])


def test_new_inputs_are_scored_alone_until_the_training_set_changes(client, space_name):
    space, ordinary, planted = two_class_space(client, space_name)
    first = space.compute_priorities(k=10)
    assert first["scored"] == 50
    before = space.priorities(n=None).set_index("id")
    assert space.priority_status() == {
        "training_version": first["training_version"],
        "labelled_training": 400,
        "scored": 50,
        "unscored": 0,
        "stale": 0,
        "job": None,
        "online": None,
    }
    rng = np.random.default_rng(21)
    new = space.add(rng.normal(0, 1, (6, 8)) - 4, dataset="prod", context="triage", inferences="b")
    assert space.priority_status()["unscored"] == 6
    again = space.compute_priorities(k=10, only_new=True)
    assert again["scored"] == 6 and again["kept"] == 50 and again["stale"] == 0
    after = space.priorities(n=None).set_index("id")
    assert set(after.index) == set(before.index) | set(new)
    # the earlier scores are kept as they were, not recomputed
    assert after.loc[before.index, "computed_at"].tolist() == before["computed_at"].tolist()
    assert after.loc[before.index, "priority"].tolist() == before["priority"].tolist()
    # a changed training set makes every score stale, and only_new then redoes them all
    space.add(rng.normal(0, 1, (3, 8)) + 4, dataset="train", labels="a")
    status = space.priority_status()
    assert status["stale"] == 56 and status["training_version"] != first["training_version"]
    redone = space.compute_priorities(k=10, only_new=True)
    assert redone["scored"] == 56 and redone["stale"] == 56 and "kept" not in redone
    assert space.priority_status()["stale"] == 0
    with pytest.raises(InvalidInput, match="only_new"):
        space.compute_priorities(only_new="yes")


def test_a_background_computation_reports_its_progress_and_outcome(client, space_name):
    space, ordinary, planted = two_class_space(client, space_name)
    started = space.compute_priorities(k=10, background=True)
    assert started["job"]["state"] == "running"
    status = space.wait_for_priorities(timeout=120)
    job = status["job"]
    assert job["state"] == "done" and job["phase"] == "done" and job["finished_at"]
    assert job["rows"] == 50 and job["summary"]["scored"] == 50
    assert status["scored"] == 50 and status["stale"] == 0
    assert set(space.priorities(n=10)["id"]) == set(planted)
    # a failure in the background is reported, not raised
    empty = client.space(space_name + "-empty")
    empty.add(vectors(4), dataset="d", context="triage")
    empty.compute_priorities(background=True)
    failed = empty.wait_for_priorities(timeout=120)["job"]
    assert failed["state"] == "failed" and "labelled training" in failed["error"]
    with pytest.raises(InvalidInput, match="background"):
        space.compute_priorities(background=1)


def test_trigger_needs_scores_and_a_selection(client, space_name):
    space = client.space(space_name)
    space.add(vectors(4), dataset="d", context="triage")
    with pytest.raises(InvalidInput, match="n or min_priority"):
        space.trigger_retraining()
    with pytest.raises(InvalidInput, match="compute_priorities"):
        space.trigger_retraining(n=5)
    with pytest.raises(InvalidInput, match="labelled training"):
        space.compute_priorities()
    with pytest.raises(InvalidInput, match="unknown parameter"):
        space.compute_priorities(kk=3)


def test_deleting_a_scored_row_removes_its_priority(client, space_name):
    space, ordinary, planted = two_class_space(client, space_name)
    space.compute_priorities()
    space.delete(ids=planted[:2])
    assert not set(space.priorities(n=None)["id"]) & set(planted[:2])


# --- plugins ---------------------------------------------------------------------
def test_third_party_algorithm_runs_through_the_client(client, space_name):
    space = client.space(space_name)
    data = vectors(50, 4, seed=8)
    data[17] += 50
    ids = space.add(data, dataset="d")
    found = space.run("centroid_outliers", top=3)
    assert found["id"].iloc[0] == ids[17]
    assert len(found) == 3 and found.attrs["meta"]["rows"] == 50
    assert "centroid_outliers" in set(client.algorithms()["name"])


def test_plugins_are_listed_with_their_hooks(client):
    plugins = {p["name"]: p for p in client.plugins()}
    assert {"store_sqlite", "algo_similarity", "algo_priority", "triggers", "outlier"} <= set(
        plugins
    )
    assert plugins["store_sqlite"]["hooks"] == ["chroma_open_store"]
    assert "chroma_nearest_neighbors" in plugins["algo_similarity"]["hooks"]
    assert plugins["outlier"]["package"] == "chroma-outlier"


def test_waiting_returns_when_done_and_gives_up_after_its_timeout():
    from chroma_client.client import _poll

    readings = iter(range(100))
    assert _poll(lambda: next(readings), lambda r: r == 3, str, None, 0.0) == 3
    with pytest.raises(TimeoutError, match="still at"):
        _poll(lambda: 1, lambda r: False, lambda r: f"still at {r}", 0.05, 0.01)


def test_score_components_become_columns_whatever_their_types():
    from chroma_client.client import _components

    texts = pa.chunked_array(
        [
            ['{"support": 0.5, "k": 10, "version": "a"}', None],
            ['{"support": 1, "k": 10, "margin": null}', '{"version": "b", "extra": [1, 2]}'],
        ]
    )
    frame = _components(texts)
    assert list(frame.columns) == ["support", "k", "version", "margin", "extra"]
    assert frame["support"].tolist()[:1] == [0.5] and frame["support"].iloc[2] == 1
    assert pd.isna(frame["support"].iloc[1]) and frame["version"].tolist()[3] == "b"
    assert list(frame["extra"].iloc[3]) == [1, 2] and frame["margin"].isna().all()
    # a key whose type changes from row to row is read one object at a time
    mixed = _components(pa.chunked_array([['{"x": 1}', '{"x": "one"}', None]]))
    assert mixed["x"].tolist()[:2] == [1, "one"] and len(mixed) == 3
    assert _components(pa.chunked_array([[]], pa.string())).empty


# --- update and upsert ---------------------------------------------------------
def test_update_sets_the_fields_given_and_keeps_the_rest(client, space_name):
    space = client.space(space_name)
    x = vectors(4)
    space.add(x, ids=["p0", "p1", "p2", "p3"], dataset="prod", context="triage",
              inferences="cat", metadata=[{"shift": i} for i in range(4)])  # fmt: skip
    assert space.update(["p1", "p3"], labels=["dog", "cat"], context="training") == ["p1", "p3"]
    got = space.get(include_embeddings=True).set_index("id")
    assert got.loc[["p1", "p3"], "label"].tolist() == ["dog", "cat"]
    assert got.loc[["p1", "p3"], "context"].tolist() == ["training"] * 2
    assert got.loc[["p0", "p2"], "context"].tolist() == ["triage"] * 2
    # what was not given keeps its value, the embedding included
    assert got.loc["p1", "inference"] == "cat" and got.loc["p1", "metadata"] == {"shift": 1}
    np.testing.assert_array_equal(got.loc["p1", "embedding"], x[1])
    assert space.count(where={"context": "training"}) == 2
    # None in a sequence clears that input's value
    space.update(["p1", "p3"], labels=[None, "bird"])
    assert space.get(ids=["p1", "p3"]).set_index("id")["label"].tolist()[1] == "bird"
    assert space.count(where={"label": None}) == 3


def test_update_of_an_unknown_id_changes_nothing(client, space_name):
    space = client.space(space_name)
    space.add(vectors(2), ids=["a", "b"], labels="x")
    with pytest.raises(NotFound, match="1 id.*nothing was updated: 'nope'"):
        space.update(["a", "nope"], labels="y")
    assert space.get()["label"].tolist() == ["x", "x"]
    with pytest.raises(InvalidInput, match="update needs a field to set"):
        space.update(["a"])
    with pytest.raises(InvalidInput, match="duplicates"):
        space.update(["a", "a"], labels="y")


def test_upsert_replaces_embeddings_and_the_index_follows(client, space_name):
    space = client.space(space_name)
    x = vectors(30, seed=3)
    space.add(x, ids=[f"r{i}" for i in range(30)], labels="a")
    moved = x[0] + 50.0
    assert space.upsert(np.vstack([moved, x[1] + 60.0]), ids=["r0", "new"], labels="b") == [
        "r0", "new",
    ]  # fmt: skip
    assert space.count() == 31
    got = space.get(ids=["r0"], include_embeddings=True)
    np.testing.assert_allclose(got["embedding"].iloc[0], moved, rtol=1e-6)
    assert got["label"].iloc[0] == "b"
    near = space.nearest_neighbors(queries=moved[None, :], k=1)
    assert near["id"].tolist() == ["r0"] and near["distance"].iloc[0] < 1e-3
    near_old = space.nearest_neighbors(queries=x[0][None, :], k=1)
    assert near_old["id"].iloc[0] != "r0"


def test_an_update_makes_what_depended_on_it_stale(client, space_name):
    space, ordinary, planted = two_class_space(client, space_name)
    space.compute_priorities()
    status = space.priority_status()
    assert status["stale"] == 0 and status["unscored"] == 0
    # a triage input fixed: its own score goes, the others stay current
    space.update([planted[0]], inferences="a")
    status = space.priority_status()
    assert status["unscored"] == 1 and status["stale"] == 0
    assert planted[0] not in set(space.priorities(n=None)["id"])
    space.compute_priorities(only_new=True)
    assert space.priority_status()["unscored"] == 0
    # labelled triage inputs moved into training: every score is out of date
    space.update(planted[1:3], labels="a", context="training")
    status = space.priority_status()
    assert status["stale"] == status["scored"] > 0
    space.compute_priorities(only_new=True)
    assert space.priority_status()["stale"] == 0
    assert not set(planted[1:3]) & set(space.priorities(n=None)["id"])
