"""Requests lost on the way to a real server are sent again when that is safe, and a batch
sent twice is stored once: a proxy between client and server loses chosen requests before
they arrive, or the replies after the server has done the work."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from chroma_client import Client
from chroma_client.errors import (
    Conflict,
    ConnectionFailed,
    InvalidInput,
    RetriesExhausted,
)
from chroma_core.config import Settings
from chroma_core.hookspecs import hookimpl
from chroma_core.schema import batch_fingerprint, validate_rows
from chroma_core.service import Chroma
from chroma_wire.protocol import decode_arrow
from tests.conftest import free_port
from tests.lossy_proxy import Exchange, LossyProxy
from tests.stores import STORES

ADD = r"/rows$"
DIM = 16


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def params_of(exchange: Exchange) -> dict:
    return decode_arrow(exchange.body)[0]


@pytest.fixture(params=STORES)
def proxy(request, servers):
    """A lossy proxy in front of the shared server of each store."""
    with LossyProxy.before(servers(request.param).url) as proxy:
        yield proxy


def connect(proxy: LossyProxy, **options) -> Client:
    options = {"retry_backoff": 0.01, "shared_memory": False, **options}
    return Client(proxy.url, **options)


def test_an_add_whose_reply_is_lost_is_sent_again_and_stored_once(proxy, space_name):
    space = connect(proxy, batch_rows=100).space(space_name)
    # the second batch is stored, and its acknowledgement lost on the way back
    proxy.lose("reply", "POST", ADD, after=1)
    ids = space.add(vectors(250), dataset="d", labels=["cat"] * 250)

    assert len(ids) == len(set(ids)) == 250
    assert space.count() == 250
    assert space.get()["id"].tolist() == ids
    sent = proxy.sent("POST", ADD)
    assert [e.outcome for e in sent] == ["relayed", "lost reply", "relayed", "relayed"]
    keys = [params_of(e)["batch_key"] for e in sent]
    assert keys[1] == keys[2] and len(set(keys)) == 3
    assert sent[1].body == sent[2].body


def test_an_add_lost_before_it_reaches_the_server_is_sent_again(proxy, space_name):
    space = connect(proxy, batch_rows=100).space(space_name)
    proxy.lose("request", "POST", ADD, after=1)
    ids = space.add(vectors(250), dataset="d")

    assert space.count() == 250
    assert space.get()["id"].tolist() == ids
    outcomes = [e.outcome for e in proxy.sent("POST", ADD)]
    assert outcomes == ["relayed", "lost request", "relayed", "relayed"]


def test_an_add_whose_reply_does_not_come_in_time_is_sent_again(proxy, space_name):
    space = connect(proxy, timeout=1.0).space(space_name)
    proxy.lose("hold", "POST", ADD)
    ids = space.add(vectors(20), dataset="d")

    assert space.count() == 20
    assert space.get()["id"].tolist() == ids
    assert [e.outcome for e in proxy.sent("POST", ADD)] == ["held reply", "relayed"]


def test_retries_give_up_after_their_bound_with_a_typed_error(proxy, space_name):
    space = connect(proxy, retries=2).space(space_name)
    proxy.lose("request", "POST", ADD, times=None)
    with pytest.raises(RetriesExhausted, match="gave up after 3 attempts") as failed:
        space.add(vectors(10), dataset="d")
    assert isinstance(failed.value, ConnectionFailed) and failed.value.attempts == 3
    assert len(proxy.sent("POST", ADD)) == 3
    assert space.count() == 0

    # every acknowledgement of the second batch lost: the client gives up, saying what was
    # stored, and the batch is stored once
    proxy.rules.clear()
    proxy.lose("reply", "POST", ADD, after=1, times=3)
    space.client.batch_rows = 10
    with pytest.raises(
        RetriesExhausted, match="3 attempts.*10 rows before it were stored, this batch may"
    ) as failed:
        space.add(vectors(30), dataset="d")
    assert failed.value.attempts == 3
    assert space.count() == 20


def test_reads_are_sent_again(proxy, space_name):
    space = connect(proxy).space(space_name)
    ids = space.add(vectors(5), dataset="d")
    proxy.lose("reply", "POST", r"/count$")
    proxy.lose("request", "POST", r"/get$")
    proxy.lose("reply", "POST", r"/nearest_neighbors$")

    assert space.count() == 5
    assert space.get()["id"].tolist() == ids
    assert len(space.nearest_neighbors(ids=ids[:1], k=2)) == 2
    for path in ("/count$", "/get$", "/nearest_neighbors$"):
        assert len(proxy.sent("POST", path)) == 2, path


def test_a_write_that_may_have_been_carried_out_is_not_sent_again(proxy, space_name):
    space = connect(proxy).space(space_name)
    ids = space.add(vectors(5), dataset="d")
    proxy.lose("reply", "POST", r"/delete$")
    with pytest.raises(ConnectionFailed, match="not sent again") as failed:
        space.delete(ids=ids[:2])
    assert not isinstance(failed.value, RetriesExhausted)
    assert len(proxy.sent("POST", r"/delete$")) == 1
    assert space.count() == 3


def test_an_unreachable_server_is_tried_as_often_as_allowed():
    client = Client(f"http://127.0.0.1:{free_port()}", retries=2, retry_backoff=0.01)
    with pytest.raises(RetriesExhausted, match="cannot reach .* gave up after 3 attempts"):
        client.spaces()
    with pytest.raises(ConnectionFailed, match="gave up after 1 attempt$"):
        Client(f"http://127.0.0.1:{free_port()}", retries=0).spaces()


@pytest.mark.parametrize(
    "option", [{"retries": -1}, {"retries": 1.5}, {"retry_backoff": -1}, {"retry_backoff": "1"}]
)
def test_retry_options_are_checked(option):
    with pytest.raises(InvalidInput, match=next(iter(option))):
        Client("http://127.0.0.1:9", **option)


# --- through shared memory ------------------------------------------------------------
def request_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if not p.name.startswith("chroma-proof-")]


def test_a_batch_sent_again_names_the_same_shared_memory_file(shm_server, space_name):
    with LossyProxy.before(shm_server.url) as proxy:
        client = Client(proxy.url, retry_backoff=0.01)
        space = client.space(space_name)
        proxy.lose("reply", "POST", ADD)
        ids = space.add(vectors(2000), dataset="d")

        assert space.count() == 2000 and space.get()["id"].tolist() == ids
        first, again = proxy.sent("POST", ADD)
        assert first.body == again.body == b""
        assert first.headers["x-chroma-shm"] == again.headers["x-chroma-shm"]
        assert client._transport.carried["shm"] == 1  # the lost reply was not counted
        assert request_files(shm_server.shm) == []


def test_a_batch_whose_file_is_gone_is_sent_again_on_the_socket(shm_server, space_name):
    def remove_file(exchange: Exchange) -> None:
        os.unlink(shm_server.shm / exchange.headers["x-chroma-shm"])

    with LossyProxy.before(shm_server.url) as proxy:
        client = Client(proxy.url, retry_backoff=0.01)
        space = client.space(space_name)
        proxy.lose("reply", "POST", ADD, then=remove_file)
        ids = space.add(vectors(2000), dataset="d")

        assert space.count() == 2000 and space.get()["id"].tolist() == ids
        lost, unreadable, on_socket = proxy.sent("POST", ADD)
        assert lost.headers["x-chroma-shm"] == unreadable.headers["x-chroma-shm"]
        assert "x-chroma-shm" not in on_socket.headers
        assert params_of(on_socket)["batch_key"] and request_files(shm_server.shm) == []


# --- what the server does with a key --------------------------------------------------
def rows(ids: list[str] | None, seed: int = 0) -> pa.Table:
    n = 3 if ids is None else len(ids)
    columns = {"dataset": ["d"] * n, "context": ["training"] * n}
    if ids is not None:
        columns["id"] = ids
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors(n, seed).ravel()), DIM)
    return pa.table({**columns, "embedding": embedding})


def test_a_keyed_batch_is_acknowledged_again_and_a_key_names_one_batch(client, space_name):
    client.space(space_name)
    keyed = {"space": space_name, "batch_key": "key-1"}
    first = client._call("add", keyed, rows(["a", "b"]))
    assert client._call("add", keyed, rows(["a", "b"])) == first
    assert first[0] == {"count": 2} and first[1].column("id").to_pylist() == ["a", "b"]
    assert client.space(space_name).count() == 2

    with pytest.raises(Conflict, match="key-1"):
        client._call("add", keyed, rows(["a", "b"], seed=1))
    with pytest.raises(Conflict, match="key-1"):
        client._call("add", keyed, rows(["c"]))
    with pytest.raises(InvalidInput, match="batch_key"):
        client._call("add", {**keyed, "batch_key": "no spaces"}, rows(["d"]))
    assert client.space(space_name).count() == 2

    # rows sent without ids get the same ids each time they are sent under one key
    unnamed = {"space": space_name, "batch_key": "key-2"}
    made = client._call("add", unnamed, rows(None))
    assert client._call("add", unnamed, rows(None)) == made
    assert client.space(space_name).count() == 5


def test_a_batch_fingerprint_depends_on_its_values_only():
    table = validate_rows(
        pa.table(
            {
                "id": ["a", "b", "c"],
                "dataset": ["d"] * 3,
                "context": ["training"] * 3,
                "label": ["cat", None, "dog"],
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors(3).ravel()), DIM),
                "output": pa.array([[1.0], None, [2.0, 3.0]], pa.list_(pa.float32())),
            }
        ),
        None,
    )
    digest = batch_fingerprint(table)
    rechunked = pa.concat_tables([table.slice(0, 1), table.slice(1)])
    assert batch_fingerprint(rechunked) == digest
    assert batch_fingerprint(pa.concat_tables([table, table]).slice(3)) == digest

    changed = [
        ("label", pa.array(["cat", "", "dog"])),  # empty, not missing
        ("id", pa.array(["ab", "", "c"])),  # the same characters, cut elsewhere
        ("output", pa.array([[1.0], [], [2.0, 3.0]], pa.list_(pa.float32()))),
        ("output", pa.array([[1.0, 2.0], None, [3.0]], pa.list_(pa.float32()))),
    ]
    for name, column in changed:
        other = table.set_column(table.schema.get_field_index(name), name, column)
        assert batch_fingerprint(other) != digest, (name, column)
    moved = vectors(3).copy()
    moved[2, 5] += 1e-6
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(moved.ravel()), DIM)
    other = table.set_column(table.schema.get_field_index("embedding"), "embedding", embedding)
    assert batch_fingerprint(other) != digest


def test_a_batch_stored_before_is_not_announced_to_the_plugins_again(tmp_path):
    chroma = Chroma(Settings.from_env({}, path=tmp_path, store="sqlite"))
    announced: list[list[int]] = []

    class Recorder:
        @hookimpl
        def chroma_rows_added(self, context, space, seqs, rows):
            announced.append(seqs.tolist())

    chroma.pm.register(Recorder())
    try:
        chroma.space("s")
        first = chroma.add("s", rows(["a", "b"]), "key-1")
        assert chroma.add("s", rows(["a", "b"]), "key-1") == first == ["a", "b"]
        chroma.add("s", rows(["c"]), "key-2")
        assert announced == [[1, 2], [3]]
    finally:
        chroma.close()
