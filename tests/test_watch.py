"""``space.watch()``: a consumer follows a space's new scored inputs and its triggers live,
in the order inputs were stored, and resumes from any event's position (also across a
server killed mid-watch) with no gap and no repeat."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from chroma_client import Client, Trigger, Watched
from chroma_client.errors import InvalidInput
from tests.conftest import Server
from tests.reliability import server_env
from tests.stores import STORES, embedded_client

DIM = 8


def training(space, n: int = 300):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    space.add(x, dataset="train", labels=np.where(x[:, 0] > 0, "pos", "neg").tolist())


def triage(space, ids: list[str], seed: int, dataset: str = "prod"):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(len(ids), DIM)).astype(np.float32)
    inference = np.where(rng.random(len(ids)) < 0.5, "pos", "neg").tolist()
    space.add(x, dataset=dataset, context="triage", inferences=inference, ids=ids)


def key(event: Watched) -> tuple[str, str]:
    return (event.kind, event.input["id"] if event.input else str(event.trigger.id))


def same_events(a: list[Watched], b: list[Watched]) -> bool:
    """The same inputs in the same order and the same triggers: where a trigger falls
    among the inputs depends on when each request was answered."""
    inputs = [[key(e) for e in x if e.kind == "input"] for x in (a, b)]
    return inputs[0] == inputs[1] and sorted(map(key, a)) == sorted(map(key, b))


def drain(watch, count: int, limit: float = 60.0) -> list[Watched]:
    got: list[Watched] = []
    deadline = time.monotonic() + limit
    while len(got) < count and time.monotonic() < deadline:
        got.extend(watch.poll())
    return got


@pytest.fixture(params=STORES)
def client(request, tmp_path, monkeypatch):
    no_refresh = {"CHROMA_PRIORITY_REFRESH_SECONDS": "0"}
    with embedded_client(request.param, tmp_path / "data", monkeypatch, **no_refresh) as opened:
        yield opened


def test_a_watch_follows_scored_inputs_in_order_then_triggers(client):
    space = client.space("live")
    training(space)
    triage(space, ["old"], seed=9)  # stored before the watch: not shown
    space.score_on_arrival(k=10)
    watch = space.watch(wait=2)
    watch.poll()  # the first request fixes "now"
    start = watch.position
    ids = [f"q{i:03d}" for i in range(60)]
    for at in range(0, 60, 20):
        triage(space, ids[at : at + 20], seed=at)
    trigger = space.trigger_retraining(n=5)
    got = drain(watch, 61)
    inputs = [e for e in got if e.kind == "input"]
    assert [e.input["id"] for e in inputs] == ids
    seqs = [e.input["seq"] for e in inputs]
    assert seqs == sorted(seqs)
    scores = space.priorities(n=None, where={"id": {"$in": ids}}).set_index("id")["priority"]
    assert all(e.input["priority"] == pytest.approx(scores[e.input["id"]]) for e in inputs)
    assert {e.input["context"] for e in inputs} == {"triage"}
    (fired,) = [e for e in got if e.kind == "trigger"]
    assert isinstance(fired.trigger, Trigger) and fired.trigger.id == trigger.id

    # resuming after any event gives exactly what followed it
    for cut in (0, 17, 59, 60):
        again = drain(space.watch(after=got[cut].position, wait=0.2), len(got) - cut - 1, 5)
        assert same_events(again, got[cut + 1 :])
    everything = drain(space.watch(after=start, wait=0.2), 61, 5)
    assert same_events(everything, got) and len(everything) == 61
    # a filter and a threshold leave the rest out, and the position still moves past them
    high = float(np.median([e.input["priority"] for e in inputs]))
    above = drain(space.watch(after=start, min_priority=high, wait=0.2), 1, 5)
    assert [e.input["id"] for e in above if e.kind == "input"] == [
        e.input["id"] for e in inputs if e.input["priority"] >= high
    ]
    none = space.watch(after=start, where={"dataset": "elsewhere"}, wait=0)
    assert [e.kind for e in none.poll()] == ["trigger"]
    assert none.position.split(":")[0] == str(inputs[-1].input["seq"])


def test_a_watch_waits_for_the_first_input_not_yet_scored(client):
    space = client.space("batch")
    training(space)
    watch = space.watch(wait=0)
    watch.poll()
    triage(space, ["a", "b", "c"], seed=1)
    assert watch.poll() == []
    assert watch.waiting_for["id"] == "a"
    space.compute_priorities(k=10)
    got = watch.poll()
    assert [e.input["id"] for e in got] == ["a", "b", "c"] and watch.waiting_for is None


def test_a_watch_iterates_until_its_timeout(client):
    space = client.space("timed")
    training(space)
    space.score_on_arrival(k=10)
    watch = space.watch(wait=0.5, timeout=3)

    def later():
        time.sleep(0.5)
        triage(space, ["x1", "x2"], seed=2)

    threading.Thread(target=later).start()
    started = time.monotonic()
    seen = list(watch)
    assert [event.input["id"] for event in seen] == ["x1", "x2"]
    assert time.monotonic() - started >= 2.5
    assert watch.position == seen[-1].position


def test_bad_watches_are_refused_naming_the_parameter(client):
    space = client.space("s")
    training(space)
    with pytest.raises(InvalidInput, match="after must be a position a watch returned"):
        space.watch(after="yesterday").poll()
    with pytest.raises(InvalidInput, match="wait is seconds from 0 to 30"):
        space.watch(wait=120)
    with pytest.raises(InvalidInput, match="min_priority"):
        space.watch(min_priority="high").poll()
    with pytest.raises(InvalidInput, match=r"\$like"):
        space.watch(where={"dataset": {"$like": "p%"}}).poll()


def test_a_position_of_a_deleted_space_starts_over_at_the_space_made_after_it(client):
    space = client.space("live")
    training(space)
    space.score_on_arrival(k=10)
    watch = space.watch(wait=2)
    watch.poll()
    triage(space, [f"old{i}" for i in range(30)], seed=1)
    seen = drain(watch, 30)
    assert [e.input["id"] for e in seen] == [f"old{i}" for i in range(30)]
    position = watch.position
    assert watch.replaced is False

    client.delete_space("live")
    again = client.space("live")
    training(again)
    again.score_on_arrival(k=10)
    # fewer rows than the old space had: their seqs all lie below the old position's
    triage(again, [f"new{i}" for i in range(10)], seed=2)
    resumed = again.watch(after=position, wait=2)
    got = drain(resumed, 10)
    assert [e.input["id"] for e in got] == [f"new{i}" for i in range(10)]
    assert resumed.replaced is True
    # its positions are the new space's: resuming from them repeats nothing
    later = again.watch(after=resumed.position, wait=0)
    assert later.poll() == [] and later.replaced is False
    # a position as watches gave before they named the space is of the space there is
    old_style = ":".join(resumed.position.split(":")[:2])
    assert again.watch(after=old_style, wait=0).poll() == []


def test_a_watch_resumes_across_a_server_killed_mid_watch(tmp_path):
    env = server_env("sqlite", CHROMA_PRIORITY_REFRESH_SECONDS="0")
    server = Server(tmp_path / "data", env=env)
    client = Client(server.url)
    space = client.space("live")
    training(space)
    space.score_on_arrival(k=10)
    watch = space.watch(wait=1, retry_for=60)
    watch.poll()
    triage(space, [f"a{i}" for i in range(30)], seed=1)
    first = drain(watch, 30)
    assert [e.input["id"] for e in first] == [f"a{i}" for i in range(30)]
    server.kill()
    restarted: list[Server] = []

    def restart():
        time.sleep(1.0)
        restarted.append(Server(tmp_path / "data", env=env, port=server.port))
        writer = Client(server.url)
        triage(writer.space("live"), [f"b{i}" for i in range(30)], seed=2)
        writer.close()

    thread = threading.Thread(target=restart)
    thread.start()
    try:
        # the watch keeps asking while the server is down, then carries on where it was
        second = drain(watch, 30, 90)
        thread.join()
        assert [e.input["id"] for e in second] == [f"b{i}" for i in range(30)]
    finally:
        thread.join()
        client.close()
        for s in restarted:
            s.stop()
