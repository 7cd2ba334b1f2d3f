"""The memory store serves a whole Chroma: the client, embedded, with ``CHROMA_STORE=memory``.

k-NN queries go to the similarity plugin, since the store has no search of its own; a
back-up pages out of it; a restore into it is refused, naming the store and what it lacks.
"""

from __future__ import annotations

import numpy as np
import pytest

from chroma_client import Client
from chroma_wire.errors import NotSupported

DIM = 8


@pytest.fixture
def open_client(tmp_path, monkeypatch):
    """Open a client on the memory store in this test's data directory; call again after
    closing the first to reopen it."""
    monkeypatch.setenv("CHROMA_STORE", "memory")
    opened: list[Client] = []

    def open_(path=tmp_path / "data") -> Client:
        opened.append(Client(path=path))
        return opened[-1]

    yield open_
    for client in opened:
        client.close()


def fill(client: Client):
    """A space of 40 labelled training rows and 20 production rows; their vectors and ids."""
    rng = np.random.default_rng(7)
    training = rng.normal(size=(40, DIM)).astype(np.float32)
    production = rng.normal(size=(20, DIM)).astype(np.float32)
    space = client.space("pets", metric="l2", model={"name": "resnet18"})
    train_ids = space.add(training, dataset="pets", context="training", labels=["cat", "dog"] * 20)
    prod_ids = space.add(production, dataset="pets", context="triage", inferences="cat")
    return space, training, train_ids, prod_ids


def test_the_client_runs_on_the_memory_store(open_client):
    client = open_client()
    assert client.version()["store"] == "memory"
    space, training, train_ids, prod_ids = fill(client)

    assert space.count() == 60
    assert space.count(where={"context": "triage"}) == 20
    assert client.spaces().set_index("name").loc["pets", "count"] == 60
    got = space.get(ids=train_ids[:3])
    assert got["id"].tolist() == train_ids[:3]
    assert got["label"].tolist() == ["cat", "dog", "cat"]

    found = space.nearest_neighbors(queries=training[:2], k=3)
    assert found.attrs["meta"]["method"] in ("hnsw", "exact")
    nearest = found[found["rank"] == 0]
    assert nearest["id"].tolist() == train_ids[:2]
    np.testing.assert_allclose(nearest["distance"], 0, atol=1e-3)
    of_stored = space.nearest_neighbors(ids=[prod_ids[0]], k=5, where={"context": "training"})
    assert len(of_stored) == 5 and set(of_stored["id"]) <= set(train_ids)

    summary = space.compute_priorities(k=5)
    assert summary["scored"] == 20
    top = space.priorities(n=5)
    assert len(top) == 5 and set(top["id"]) <= set(prod_ids)
    assert top["priority"].is_monotonic_decreasing

    trigger = space.trigger_retraining(n=3, note="relabel three")
    assert (trigger.count, trigger.status, trigger.note) == (3, "pending", "relabel three")
    assert client.triggers("pets")["id"].tolist() == [trigger.id]
    assert client.trigger_items(trigger.id)["id"].tolist() == top["id"].tolist()[:3]

    assert space.delete(ids=prod_ids[:5]) == 5
    assert space.count() == 55
    assert not set(space.priorities(n=None)["id"]) & set(prod_ids[:5])


def test_what_was_stored_outlives_the_client(open_client):
    client = open_client()
    space, _, train_ids, prod_ids = fill(client)
    space.compute_priorities(k=5)
    trigger = space.trigger_retraining(n=2)
    client.close()

    again = open_client()
    space = again.space("pets")
    assert space.count() == 60
    assert space.get(ids=[prod_ids[-1]])["id"].tolist() == [prod_ids[-1]]
    assert len(space.priorities(n=None)) == 20
    assert again.trigger_items(trigger.id)["id"].tolist() == space.priorities(n=2)["id"].tolist()
    assert len(space.nearest_neighbors(ids=train_ids[:1], k=4)) == 4


def test_a_back_up_pages_out_and_a_restore_is_refused_naming_the_store(open_client, tmp_path):
    client = open_client()
    fill(client)
    manifest = client.export_to(tmp_path / "backup", progress=False)
    assert [space["name"] for space in manifest["spaces"]] == ["pets"]
    client.close()

    elsewhere = open_client(tmp_path / "elsewhere")
    with pytest.raises(NotSupported, match="'memory' store cannot restore a back-up"):
        elsewhere.import_from(tmp_path / "backup", progress=False)
    assert len(elsewhere.spaces()) == 0
