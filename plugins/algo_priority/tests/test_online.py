"""Scoring on arrival: once a space's online scoring is on, every non-training row stored
gets its priority with no call, close to what a full computation gives it; rows waiting
when a server stops are scored after its restart, and nothing is scored twice."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest

from chroma_client import Client
from chroma_client.errors import InvalidInput
from tests.conftest import Server
from tests.reliability import server_env
from tests.stores import STORES, embedded_client

DIM = 16
TRAIN = 2_000


def labelled(seed: int = 0, n: int = TRAIN):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 3, size=(4, DIM))
    classes = rng.integers(0, 3, n)
    labels = [f"c{c}" for c in classes]
    return means, (means[classes] + rng.normal(size=(n, DIM))).astype(np.float32), labels


def triage(means, n: int, seed: int):
    """Rows of classes 0-3 (3 never seen in training), a tenth with a wrong inference."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 4, n)
    wrong = rng.random(n) < 0.1
    inference = np.where(wrong, (true + 1) % 3, np.minimum(true, 2))
    x = (means[true] + rng.normal(size=(n, DIM))).astype(np.float32)
    return x, [f"c{c}" for c in inference]


def online_space(client, name: str):
    """A space of labelled training rows, scored on arrival, and the class means."""
    means, train_x, labels = labelled()
    space = client.space(name)
    space.add(train_x, dataset="train", labels=labels)
    space.score_on_arrival()
    return space, means


def wait_for_scores(space, ids: list[str], timeout: float = 120.0) -> pd.DataFrame:
    deadline = time.monotonic() + timeout
    while True:
        got = space.priorities(n=None, where={"id": {"$in": ids}})
        if len(got) == len(ids) or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


@pytest.fixture(params=STORES)
def client(request, tmp_path, monkeypatch):
    no_refresh = {"CHROMA_PRIORITY_REFRESH_SECONDS": "0"}
    with embedded_client(request.param, tmp_path / "data", monkeypatch, **no_refresh) as opened:
        yield opened


def test_rows_stored_after_it_is_on_are_scored_with_no_call(client):
    means, train_x, labels = labelled()
    space = client.space("live")
    space.add(train_x, dataset="train", labels=labels, ids=[f"t{i}" for i in range(TRAIN)])
    before_x, before_inference = triage(means, 50, seed=1)
    space.add(before_x, dataset="prod", context="triage", inferences=before_inference,
              ids=[f"b{i}" for i in range(50)])  # fmt: skip
    state = space.score_on_arrival(k=10)
    assert state["k"] == 10 and state["shrinkage"] == 0.1

    x, inference = triage(means, 400, seed=2)
    ids = [f"q{i}" for i in range(400)]
    with space.stream(linger=0.01) as stream:
        for at in range(0, 400, 40):
            stream.add(x[at : at + 40], dataset="prod", context="triage",
                       inferences=inference[at : at + 40], ids=ids[at : at + 40])  # fmt: skip
    online = wait_for_scores(space, ids)
    # rows stored before it was turned on are caught up
    assert len(wait_for_scores(space, [f"b{i}" for i in range(50)])) == 50
    assert len(online) == 400
    status = space.priority_status()
    assert status["unscored"] == 0 and status["stale"] == 0
    assert status["online"]["model"]["training"] == TRAIN
    assert status["online"]["scored"] >= 450

    # a full computation over the same rows ranks them as the scores on arrival did
    full = space.run("priority", k=10).set_index("id")
    online = online.set_index("id")
    both = online.merge(full[["priority", "disagreement"]], left_index=True, right_index=True,
                        suffixes=("", "_full"))  # fmt: skip
    assert np.corrcoef(both["priority"], both["priority_full"])[0, 1] > 0.95
    assert (both["disagreement"] == both["disagreement_full"]).mean() > 0.9
    # the components are there, training rows never scored
    assert {"support", "novelty", "mahalanobis_pct", "confidence"} <= set(online.columns)
    assert not any(i.startswith("t") for i in space.priorities(n=None)["id"])


@pytest.fixture
def sqlite_client(tmp_path, monkeypatch):
    """The switches below are the plugin's own, whatever the store: SQLite only."""
    monkeypatch.setenv("CHROMA_STORE", "sqlite")
    monkeypatch.setenv("CHROMA_PRIORITY_REFRESH_SECONDS", "0")
    with Client(path=tmp_path / "data") as opened:
        yield opened


def test_it_is_off_until_turned_on_and_off_again_when_turned_off(sqlite_client):
    client = sqlite_client
    means, train_x, labels = labelled()
    space = client.space("switch")
    space.add(train_x, dataset="train", labels=labels)
    x, inference = triage(means, 30, seed=3)
    space.add(x[:10], dataset="prod", context="triage", inferences=inference[:10])
    time.sleep(0.5)
    assert len(space.priorities(n=None)) == 0
    assert space.priority_status()["online"] is None
    space.score_on_arrival()
    assert len(wait_for_scores(space, list(space.get(where={"context": "triage"})["id"]))) == 10
    assert space.score_on_arrival(enabled=False) is None
    space.add(x[10:], dataset="prod", context="triage", inferences=inference[10:])
    time.sleep(1.0)
    assert len(space.priorities(n=None)) == 10
    with pytest.raises(InvalidInput, match="k must be"):
        space.score_on_arrival(k=0)


def test_the_status_says_while_the_model_is_being_built(sqlite_client, monkeypatch):
    import chroma_algo_priority.online as online

    real = online.build
    release = threading.Event()

    def slow_build(*args, **kwargs):
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(online, "build", slow_build)
    space, means = online_space(sqlite_client, "slow")
    x, inference = triage(means, 10, seed=5)
    ids = [f"q{i}" for i in range(10)]
    space.add(x, dataset="prod", context="triage", inferences=inference, ids=ids)
    deadline = time.monotonic() + 10
    while space.priority_status()["online"]["building"] is None and time.monotonic() < deadline:
        time.sleep(0.02)
    status = space.priority_status()["online"]
    assert status["building"] is not None and status["model"] is None
    assert status["building"]["seconds"] >= 0 and status["building"]["since"]
    release.set()
    assert len(wait_for_scores(space, ids)) == 10
    status = space.priority_status()["online"]
    assert status["building"] is None and status["model"]["training"] == TRAIN


def test_a_space_without_labelled_training_rows_is_scored_once_it_has_them(sqlite_client):
    client = sqlite_client
    means, train_x, labels = labelled()
    space = client.space("empty")
    space.score_on_arrival()
    x, inference = triage(means, 20, seed=4)
    ids = [f"q{i}" for i in range(20)]
    space.add(x, dataset="prod", context="triage", inferences=inference, ids=ids)
    time.sleep(1.0)
    status = space.priority_status()["online"]
    assert "labelled training inputs" in status["last_error"]
    assert len(space.priorities(n=None)) == 0
    space.add(train_x, dataset="train", labels=labels)
    # the space is tried again after its back-off and its rows caught up
    assert len(wait_for_scores(space, ids)) == 20


@pytest.mark.parametrize("store", STORES)
def test_rows_waiting_when_the_server_is_killed_are_scored_after_its_restart(store, tmp_path):
    env = server_env(store)
    server = Server(tmp_path / "data", env=env, timeout=120)
    try:
        client = Client(server.url, shared_memory=False)
        space, means = online_space(client, "restart")
        x, inference = triage(means, 300, seed=5)
        ids = [f"q{i}" for i in range(300)]
        space.add(x[:100], dataset="prod", context="triage", inferences=inference[:100],
                  ids=ids[:100])  # fmt: skip
        assert len(wait_for_scores(space, ids[:100])) == 100
        # these are acknowledged, and the server is killed before it can score them all
        space.add(x[100:], dataset="prod", context="triage", inferences=inference[100:],
                  ids=ids[100:])  # fmt: skip
        server.kill()
        client.close()
        server = Server(tmp_path / "data", env=env, port=server.port, timeout=300)
        client = Client(server.url, shared_memory=False)
        space = client.space("restart")
        # the setting is in the store; the first status read finds the space online and
        # catches up its unscored rows
        assert space.priority_status()["online"]["k"] == 10
        scores = wait_for_scores(space, ids)
        assert len(scores) == 300 and scores["id"].is_unique
        client.close()
    finally:
        server.stop()


def test_rows_beyond_the_queue_are_read_back_from_the_store_and_scored_once(client, monkeypatch):
    from chroma_algo_priority import online

    # the queue holds 60 rows: most of what arrives is dropped from memory at once
    monkeypatch.setattr(online, "MAX_QUEUED_ROWS", 60)
    space, means = online_space(client, "overflow")
    x, inference = triage(means, 600, seed=6)
    ids = [f"q{i}" for i in range(600)]
    for at in range(0, 600, 50):
        space.add(x[at : at + 50], dataset="prod", context="triage",
                  inferences=inference[at : at + 50], ids=ids[at : at + 50])  # fmt: skip
    scores = wait_for_scores(space, ids)
    assert len(scores) == 600 and scores["id"].is_unique
    status = space.priority_status()["online"]
    assert status["queued"] <= 60 and status["catching_up"] is False
    # rows did go past the queue, and were scored all the same
    assert status["dropped"] > 0
