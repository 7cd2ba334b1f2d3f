"""The ``projection_umap`` map through the client: real umap-learn on generated data."""

from __future__ import annotations

import numpy as np
import pytest

from chroma_algo_umap import plugin
from chroma_client import Client
from chroma_client.errors import InvalidInput

DIM = 16


@pytest.fixture
def client(tmp_path):
    c = Client(path=tmp_path / "data")
    yield c
    c.close()


def clusters(per: int = 60, seed: int = 0):
    """Four tight clusters; two of them sit close together, the other two far apart."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((4, DIM))
    centres[1, 0] = 1.5  # near cluster 0
    centres[2, 1] = 40.0
    centres[3, 2] = -40.0
    labels = np.repeat(np.arange(4), per)
    x = centres[labels] + rng.normal(0, 0.2, (len(labels), DIM))
    return x.astype(np.float32), labels


def test_umap_keeps_neighbours_together_where_the_map_is_listed(client):
    space = client.space("clusters")
    x, labels = clusters()
    ids = space.add(x, labels=[f"c{v}" for v in labels])
    assert "projection_umap" in set(client.algorithms()["name"])
    found = space.run("projection_umap", seed=3)
    meta = found.attrs["meta"]
    assert meta["method"] == "umap" and meta["algorithm"] == "projection_umap"
    assert meta["sampled"] == len(x) and meta["cached"] is False
    assert meta["settings"]["sample"] == plugin.DEFAULT_SAMPLE
    assert found["id"].tolist() == ids and np.isfinite(found[["x", "y"]].to_numpy()).all()
    # each point's nearest point on the map is of its own cluster
    xy = found[["x", "y"]].to_numpy()
    d = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    np.fill_diagonal(d, np.inf)
    same = (labels[d.argmin(1)] == labels).mean()
    assert same > 0.95, same
    # the same seed gives the same map, from the cache while the space is unchanged
    again = space.run("projection_umap", seed=3)
    assert again.attrs["meta"]["cached"] is True
    np.testing.assert_array_equal(again[["x", "y"]].to_numpy(), xy)
    space.add(x[:1] + 0.01, labels="c0")
    assert space.run("projection_umap", seed=3).attrs["meta"]["cached"] is False


def test_umap_takes_its_own_parameters_and_names_a_bad_one(client):
    space = client.space("params")
    x, labels = clusters(per=10)
    space.add(x, labels=[f"c{v}" for v in labels])
    found = space.run("projection_umap", n_neighbors=5, min_dist=0.5, sample=30)
    assert found.attrs["meta"]["n_neighbors"] == 5 and len(found) == 30
    with pytest.raises(InvalidInput, match="min_dist"):
        space.run("projection_umap", min_dist=2.0)
    with pytest.raises(InvalidInput, match="n_neighbors"):
        space.run("projection_umap", n_neighbors=1)
    tiny = client.space("tiny")
    tiny.add(x[:2], labels="c0")
    assert len(tiny.run("projection_umap")) == 2


def test_without_umap_learn_nothing_is_registered(monkeypatch):
    monkeypatch.setattr(plugin, "available", lambda: False)
    assert plugin.chroma_algorithms() == []
    monkeypatch.undo()
    assert [a.name for a in plugin.chroma_algorithms()] == ["projection_umap"]
