"""The ``projection`` algorithm through the service: sampling, the map, and its cache."""

import numpy as np
import pytest

from chroma_algo_projection.pca import principal_components
from chroma_algo_projection.plugin import Projection
from chroma_client import Client
from chroma_core.config import Settings
from chroma_core.hookspecs import hookimpl
from chroma_core.plugins import plugin_manager
from chroma_core.service import Chroma
from chroma_wire.errors import InvalidFilter, InvalidInput

DIM = 12


def rows(n: int, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, DIM)) * np.linspace(4, 0.5, DIM) + shift).astype(np.float32)


@pytest.fixture
def client(tmp_path):
    c = Client(path=tmp_path / "data")
    yield c
    c.close()


def test_the_map_is_the_pca_of_the_stored_rows_with_their_catalogue(client):
    space = client.space("plain")
    train = rows(300)
    space.add(train, dataset="train", labels=["a"] * 150 + ["b"] * 150, input_uris="s3://x")
    triage = rows(50, shift=2.0, seed=1)
    space.add(triage, dataset="week1", context="triage", inferences="b")
    found = space.run("projection")
    meta = found.attrs["meta"]
    assert list(found.columns) == [
        "id",
        "x",
        "y",
        "dataset",
        "context",
        "label",
        "inference",
        "input_uri",
    ]
    assert meta["rows"] == meta["sampled"] == len(found) == 350
    assert meta["method"] == "pca" and meta["cached"] is False
    expected = principal_components(np.vstack([train, triage]))
    coordinates = found[["x", "y"]].to_numpy()
    assert np.allclose(coordinates, expected.coordinates, atol=1e-4)
    assert np.allclose(meta["explained_variance_ratio"], expected.variance_ratio)
    by_id = found.set_index("id")
    stored = space.get()
    assert (by_id.loc[stored["id"], "dataset"].to_numpy() == stored["dataset"].to_numpy()).all()
    assert set(found.loc[found["context"] == "triage", "inference"]) == {"b"}
    assert set(found.loc[found["context"] == "training", "input_uri"]) == {"s3://x"}


def test_cosine_spaces_are_mapped_after_scaling_rows_to_unit_length(client):
    space = client.space("angles", metric="cosine")
    x = rows(200, shift=1.0)
    space.add(x * np.linspace(1, 50, 200, dtype=np.float32)[:, None], dataset="d")
    found = space.run("projection")
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert np.allclose(
        found[["x", "y"]].to_numpy(), principal_components(unit).coordinates, atol=1e-4
    )


def test_a_large_space_is_sampled_by_dataset_and_context_with_a_seed(client):
    space = client.space("big")
    space.add(rows(3000), dataset="train")
    space.add(rows(400, seed=2), dataset="week1", context="triage")
    space.add(rows(40, seed=3), dataset="week2", context="triage")
    found = space.run("projection", sample=1000, seed=4)
    strata = {(s["dataset"], s["context"]): s for s in found.attrs["meta"]["strata"]}
    assert {key: (s["rows"], s["sampled"]) for key, s in strata.items()} == {
        ("train", "training"): (3000, 560),
        ("week1", "triage"): (400, 400),
        ("week2", "triage"): (40, 40),
    }
    assert found["dataset"].value_counts().to_dict() == {"train": 560, "week1": 400, "week2": 40}
    assert found["id"].is_unique
    again = space.run("projection", sample=1000, seed=4)
    other = space.run("projection", sample=1000, seed=5)
    assert again.attrs["meta"]["cached"] is True
    assert list(again["id"]) == list(found["id"])
    assert other.attrs["meta"]["cached"] is False
    assert set(other["id"]) != set(found["id"])
    only = space.run("projection", where={"dataset": "week2"})
    assert len(only) == 40 and set(only["dataset"]) == {"week2"}


def test_the_cached_map_is_used_until_rows_are_added_or_deleted(client):
    space = client.space("changing")
    ids = space.add(rows(100), dataset="train")
    first = space.run("projection")
    assert first.attrs["meta"]["cached"] is False
    cached = space.run("projection")
    assert cached.attrs["meta"]["cached"] is True
    assert cached.equals(first)
    space.add(rows(20, shift=5.0, seed=9), dataset="new", context="triage")
    grown = space.run("projection")
    assert grown.attrs["meta"]["cached"] is False and len(grown) == 120
    assert space.run("projection").attrs["meta"]["cached"] is True
    space.delete(ids=ids[:30])
    shrunk = space.run("projection")
    assert shrunk.attrs["meta"]["cached"] is False and len(shrunk) == 90
    assert not set(ids[:30]) & set(shrunk["id"])


def test_a_change_made_by_another_service_is_seen_without_its_hooks(client):
    # another server on the same ClickHouse database writes without this one's hooks: a
    # write straight to the store stands in for it
    import pyarrow as pa

    from chroma_core import filters
    from chroma_core.schema import validate_rows

    store = client._transport.chroma.store
    mine = client.space("shared")
    mine.add(rows(50), dataset="a")
    assert len(mine.run("projection")) == 50
    assert mine.run("projection").attrs["meta"]["cached"] is True

    def unannounced(n: int, seed: int, dataset: str) -> pa.Table:
        return pa.table(
            {
                "id": [f"{dataset}{i}" for i in range(n)],
                "dataset": [dataset] * n,
                "context": ["training"] * n,
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(rows(n, seed=seed).ravel()), DIM
                ),
            }
        )

    store.add("shared", validate_rows(unannounced(5, 7, "b"), DIM))
    after = mine.run("projection")
    assert after.attrs["meta"]["cached"] is False and len(after) == 55
    # a delete of as many rows as were added leaves the max seq but not the count
    store.delete("shared", where=filters.parse({"dataset": "b"}))
    assert len(mine.run("projection")) == 50


def test_bad_parameters_are_refused_by_name(client):
    space = client.space("params")
    space.add(rows(10), dataset="a")
    for params, named in (
        ({"sample": 0}, "sample"),
        ({"sample": 10**7}, "sample"),
        ({"sample": True}, "sample"),
        ({"seed": -1}, "seed"),
        ({"seed": "1"}, "seed"),
        ({"where": "dataset"}, "where"),
        ({"colour": "red"}, "colour"),
    ):
        with pytest.raises(InvalidInput, match=named):
            space.run("projection", **params)
    with pytest.raises(InvalidFilter):
        space.run("projection", where={"dataset": {"$near": 1}})


def test_an_empty_space_gives_an_empty_map(client):
    found = client.space("empty").run("projection")
    assert len(found) == 0 and found.attrs["meta"]["rows"] == 0


class FirstTwo(Projection):
    """A third party's map: the first two coordinates, scaled by a parameter."""

    name = "projection_first_two"
    description = "the first two coordinates"

    def options(self, params):
        scale = params.pop("scale", 1.0)
        if not isinstance(scale, int | float):
            raise InvalidInput("scale must be a number")
        return {"scale": float(scale)}

    def project(self, x, seed, options):
        return x[:, :2] * options["scale"], {"method": "first two"}


class FirstTwoPlugin:
    @hookimpl
    def chroma_algorithms(self):
        return [FirstTwo()]


def test_another_plugin_adds_a_map_through_the_same_dispatch(tmp_path):
    client_rows = rows(30)
    with Client(path=tmp_path / "data") as client:
        client.space("s").add(client_rows, dataset="d")
    settings = Settings.from_env({}, path=tmp_path / "data")
    chroma = Chroma(settings, pm=plugin_manager([FirstTwoPlugin()]))
    try:
        names = {a["name"] for a in chroma.algorithms()}
        assert {"projection", "projection_first_two"} <= names
        found = chroma.run("s", "projection_first_two", {"scale": 2})
        assert np.allclose(
            np.column_stack([found.table.column("x"), found.table.column("y")]),
            client_rows[:, :2] * 2,
        )
        assert found.meta["method"] == "first two" and found.meta["options"] == {"scale": 2.0}
        assert chroma.run("s", "projection_first_two", {"scale": 2}).meta["cached"] is True
        with pytest.raises(InvalidInput, match="scale"):
            chroma.run("s", "projection_first_two", {"scale": "big"})
    finally:
        chroma.close()
