"""``space.stream()``: small adds from many threads stored in coalesced batches, each row
once, in each producer's order; back-pressure instead of unbounded memory; batches sent
again under the same key through lost replies and a killed server."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import numpy as np
import pytest

from chroma_client import Client
from chroma_client.errors import (
    Conflict,
    ConnectionFailed,
    DimensionMismatch,
    InvalidInput,
    StreamError,
    StreamFull,
)
from chroma_wire.protocol import decode_arrow
from tests.conftest import Server
from tests.lossy_proxy import LossyProxy
from tests.reliability import server_env
from tests.stores import STORES, store_environment

ADD = r"/rows$"
DIM = 8


def vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def produce(stream, producers: int, calls: int, rows: int) -> dict[int, list[Future]]:
    """``producers`` threads each making ``calls`` adds of ``rows`` rows, ids
    ``p{producer}-{call}-{row}``; the futures of each producer, in call order."""
    futures: dict[int, list[Future]] = {p: [] for p in range(producers)}

    def run(p: int) -> None:
        for c in range(calls):
            ids = [f"p{p}-{c}-{r}" for r in range(rows)]
            futures[p].append(
                stream.add(
                    vectors(rows, seed=p * 100_000 + c),
                    ids=ids,
                    dataset=f"producer{p}",
                    context="triage",
                    labels=["a" if r % 2 else "b" for r in range(rows)],
                    inferences="a",
                    input_uris=[f"s3://bucket/{i}.jpg" for i in ids],
                )
            )

    threads = [threading.Thread(target=run, args=(p,)) for p in range(producers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return futures


def assert_stored_once_in_order(space, futures: dict[int, list[Future]], rows: int) -> None:
    stored = space.get()
    ids = stored["id"].tolist()
    expected = sum(len(f) for f in futures.values()) * rows
    assert len(ids) == len(set(ids)) == expected
    place = {id_: i for i, id_ in enumerate(ids)}
    for p, fs in futures.items():
        sent = [id_ for f in fs for id_ in f.result(timeout=0)]
        assert sent == [f"p{p}-{c}-{r}" for c in range(len(fs)) for r in range(rows)]
        # a producer's rows are stored in the order it added them
        assert [place[id_] for id_ in sent] == sorted(place[id_] for id_ in sent)
    by_id = stored.set_index("id")
    assert by_id.loc["p1-3-0", "dataset"] == "producer1"
    assert by_id.loc["p1-3-1", "label"] == "a"
    assert by_id.loc["p1-3-1", "input_uri"] == "s3://bucket/p1-3-1.jpg"


@pytest.fixture(params=STORES)
def embedded(request, tmp_path, monkeypatch):
    for key, value in store_environment(request.param, tmp_path / "data").items():
        monkeypatch.setenv(key, value)
    client = Client(path=tmp_path / "data")
    yield client
    client.close()


def test_many_producers_rows_are_stored_once_each_in_their_order_in_few_batches(embedded):
    space = embedded.space("live")
    with space.stream(linger=0.02) as stream:
        futures = produce(stream, producers=6, calls=40, rows=5)
        stream.flush(timeout=120)
        # 240 calls went in far fewer requests
        assert 1 <= stream.batches < 120
        assert stream.acknowledged_rows == 1200 and stream.failed_rows == 0
        assert stream.pending_rows == 0
    assert_stored_once_in_order(space, futures, rows=5)
    # the stored vectors are the ones sent
    _, matrix = space.embeddings(ids=["p2-7-0", "p2-7-4"])
    np.testing.assert_array_equal(matrix, vectors(5, seed=2 * 100_000 + 7)[[0, 4]])


def test_a_call_larger_than_a_batch_goes_in_several_and_resolves_once_all_are_stored(embedded):
    space = embedded.space("big")
    with space.stream(max_batch_rows=100, max_pending_rows=300) as stream:
        future = stream.add(vectors(1050, seed=1), dataset="d")
        ids = future.result(timeout=120)
        assert len(ids) == 1050
        assert stream.batches == 11
    assert space.count() == 1050
    assert space.get()["id"].tolist() == ids


def test_bad_input_is_refused_in_the_producer_and_the_stream_goes_on(embedded):
    space = embedded.space("checked")
    space.add(vectors(3, seed=0), dataset="d", ids=["taken-0", "taken-1", "taken-2"])
    stream = space.stream()
    with pytest.raises(DimensionMismatch, match="9 dimensions; space 'checked' holds 8"):
        stream.add(np.ones((2, 9), np.float32), dataset="d")
    with pytest.raises(InvalidInput, match="NaN"):
        stream.add(np.full((1, DIM), np.nan), dataset="d")
    with pytest.raises(InvalidInput, match="dataset is required"):
        stream.add(vectors(1, seed=0), dataset=None)
    # a call the service refuses fails alone, though it went in one batch with others
    stream.linger = 0.5
    before = stream.add(vectors(1, seed=5), dataset="d", ids=["new-0"])
    refused = stream.add(vectors(2, seed=3), dataset="d", ids=["taken-1", "new-3"])
    good = stream.add(vectors(2, seed=4), dataset="d", ids=["new-1", "new-2"])
    assert isinstance(refused.exception(timeout=60), Conflict)
    with pytest.raises(StreamError, match="2 rows of 1 add") as raised:
        stream.flush(timeout=60)
    assert raised.value.failed_rows == 2
    assert "taken-1" in str(raised.value.__cause__)
    assert good.result(timeout=0) == ["new-1", "new-2"]
    assert before.result(timeout=0) == ["new-0"]
    stream.flush(timeout=60)  # reported once
    stream.close()
    with pytest.raises(InvalidInput, match="stream is closed"):
        stream.add(vectors(1, seed=0), dataset="d")
    assert sorted(space.get()["id"]) == ["new-0", "new-1", "new-2", "taken-0", "taken-1", "taken-2"]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("max_batch_rows", 0, "max_batch_rows must be a positive integer"),
        ("linger", -1, "linger must be a number of seconds"),
        ("max_pending_rows", 10, r"max_pending_rows \(10\) must be at least max_batch_rows"),
        ("retry_for", "soon", "retry_for must be a number of seconds"),
    ],
)
def test_stream_options_are_checked(embedded, option, value, message):
    with pytest.raises(InvalidInput, match=message):
        embedded.space("options").stream(**{option: value})


def test_closing_the_client_sends_what_its_streams_hold(tmp_path):
    client = Client(path=tmp_path / "data")
    stream = client.space("closing").stream(linger=5.0)
    future = stream.add(vectors(7, seed=0), dataset="d")
    client.close()
    assert len(future.result(timeout=0)) == 7
    with Client(path=tmp_path / "data") as again:
        assert again.space("closing").count() == 7


@pytest.mark.parametrize("store", STORES)
def test_a_full_stream_blocks_then_refuses_and_a_reply_lost_is_stored_once(
    store, servers, space_name
):
    with LossyProxy.before(servers(store).url) as proxy:
        client = Client(proxy.url, timeout=2.0, retry_backoff=0.01, shared_memory=False)
        space = client.space(space_name)
        # the first batch is stored, and its reply held until the client gives up on it
        proxy.lose("hold", "POST", ADD)
        stream = space.stream(max_batch_rows=100, max_pending_rows=200, linger=0)
        first = stream.add(vectors(100, seed=1), dataset="d")
        second = stream.add(vectors(100, seed=2), dataset="d")
        with pytest.raises(StreamFull, match=r"held 200 rows for 0.2 s.*max_pending_rows"):
            stream.add(vectors(1, seed=3), dataset="d", timeout=0.2)
        stream.flush(timeout=120)
        assert space.get()["id"].tolist() == first.result() + second.result()
        sent = proxy.sent("POST", ADD)
        assert [e.outcome for e in sent] == ["held reply", "relayed", "relayed"]
        keys = [decode_arrow(e.body)[0]["batch_key"] for e in sent]
        assert keys[0] == keys[1] != keys[2]
        stream.close()
        client.close()


@pytest.mark.parametrize("store", STORES)
def test_nothing_acknowledged_is_lost_and_nothing_doubled_through_a_server_kill(store, tmp_path):
    server = Server(tmp_path / "data", env=server_env(store), timeout=120)
    try:
        client = Client(server.url, retry_backoff=0.01, shared_memory=False)
        space = client.space("killed")
        stream = space.stream(linger=0.01, retry_for=300)
        started = threading.Event()
        killed: list[Server] = []

        def kill_and_restart() -> None:
            started.wait()
            server.kill()
            killed.append(Server(tmp_path / "data", env=server_env(store), port=server.port,
                                 timeout=300))  # fmt: skip

        killer = threading.Thread(target=kill_and_restart)
        killer.start()
        futures: dict[int, list[Future]] = {p: [] for p in range(3)}

        def run(p: int) -> None:
            for c in range(60):
                if p == 0 and c == 20:
                    started.set()
                ids = [f"p{p}-{c}-{r}" for r in range(10)]
                futures[p].append(stream.add(vectors(10, seed=c), ids=ids, dataset="d"))
                time.sleep(0.02)  # a production pace: the stream spans the kill

        producers = [threading.Thread(target=run, args=(p,)) for p in range(3)]
        for thread in producers:
            thread.start()
        for thread in producers:
            thread.join()
        killer.join()
        stream.flush(timeout=300)
        # batches met the server down and waited for it
        assert stream.retries >= 1 and stream.failed_rows == 0
        ids = space.get()["id"].tolist()
        assert len(ids) == len(set(ids)) == 1800
        for p, fs in futures.items():
            assert [i for f in fs for i in f.result(timeout=0)] == [
                f"p{p}-{c}-{r}" for c in range(60) for r in range(10)
            ]
        stream.close()
        client.close()
    finally:
        for s in [server, *killed]:
            if s.process.poll() is None:
                s.stop()


def test_a_batch_that_cannot_reach_the_server_fails_after_retry_for(tmp_path):
    server = Server(tmp_path / "data", env=server_env("sqlite"))
    client = Client(server.url, retries=0, retry_backoff=0.01, shared_memory=False)
    stream = client.space("gone").stream(retry_for=0.5, linger=0)
    server.stop()
    future = stream.add(vectors(4, seed=0), dataset="d")
    error = future.exception(timeout=60)
    assert isinstance(error, ConnectionFailed)
    assert "could not reach the server for 0.5 s (retry_for)" in str(error)
    with pytest.raises(StreamError, match="4 rows of 1 add"):
        stream.flush(timeout=60)
    assert stream.failed_rows == 4 and stream.retries >= 1
    stream.close()
    client.close()
