"""How requests travel to a real server: shared memory when co-located, the socket otherwise,
and batches of one add sent in order."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pytest

from chroma_client import Client
from chroma_client import shared_memory as client_shm
from chroma_client.errors import Conflict, DimensionMismatch, InvalidInput, PayloadTooLarge
from chroma_core.config import Settings
from chroma_core.shared_memory import SharedMemory
from chroma_wire.protocol import (
    ARROW_TYPE,
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    SHM_HEADER,
    SHM_REPLY_HEADER,
    SHM_ROUTE,
    TRANSPORT_HEADER,
    write_arrow,
)
from tests.conftest import Server

DIM = 128


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def leftovers(directory: Path) -> list[str]:
    """Files in a server's shared-memory directory other than its proof."""
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("chroma-proof-"))


def raw_request(server, directory: Path, name: str, table: pa.Table, space: str):
    """POST ``table`` as an add through a shared-memory file ``name`` the test wrote."""
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb") as file:
        write_arrow(file, {}, table)
    return post_named(server, name, space)


def post_named(server, name: str, space: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/v1/spaces/{space}/rows",
        headers={"Content-Type": ARROW_TYPE, PROTOCOL_HEADER: PROTOCOL_VERSION, SHM_HEADER: name},
    )


def rows(n: int, start: int = 0) -> pa.Table:
    return pa.table(
        {
            "id": [f"raw{i}" for i in range(start, start + n)],
            "dataset": ["d"] * n,
            "context": ["training"] * n,
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors(n).ravel()), DIM),
        }
    )


# --- shared memory when co-located ------------------------------------------------------
def test_large_requests_and_replies_go_through_shared_memory(shm_server, space_name):
    client = Client(shm_server.url)
    space = client.space(space_name)
    data = vectors(3000)
    ids = space.add(data, dataset="d", labels=np.arange(3000) % 7)
    carried = client._transport.carried
    assert carried["shm"] == 1
    frame = space.get(ids=ids, include_embeddings=True)
    assert carried["shm reply"] == 1
    np.testing.assert_array_equal(np.stack(frame["embedding"]), data)
    assert frame["label"].tolist() == [str(i % 7) for i in range(3000)]
    # small requests and replies stay on the socket
    space.add(vectors(2, seed=1), dataset="d")
    assert space.count() == 3002
    assert carried["shm"] == 1 and carried["shm reply"] == 1 and carried["socket"] >= 3
    assert leftovers(shm_server.shm) == []


def test_the_default_directory_is_dev_shm(server, space_name):
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm on this machine")
    offer = httpx.get(f"{server.url}{SHM_ROUTE}").json()
    assert offer["directory"] == os.path.realpath("/dev/shm")
    assert offer["proof"].startswith("chroma-proof-")
    client = Client(server.url)
    client.space(space_name).add(vectors(1000), dataset="d")
    assert client._transport.carried["shm"] == 1


def test_the_reply_header_names_the_transport(shm_server, space_name):
    Client(shm_server.url).space(space_name)
    table = rows(200)
    name = "chroma-" + "a" * 32
    response = raw_request(shm_server, shm_server.shm, name, table, space_name)
    assert response.status_code == 200, response.text
    assert response.headers[TRANSPORT_HEADER] == "shm"
    os.unlink(shm_server.shm / name)
    response = httpx.post(f"{shm_server.url}/api/v1/spaces/{space_name}/count", json={})
    assert response.headers[TRANSPORT_HEADER] == "socket"
    assert response.json()["count"] == 200


# --- falling back to the socket ----------------------------------------------------------
def test_shared_memory_is_off_by_option_or_environment(shm_server, space_name, monkeypatch):
    off = Client(shm_server.url, shared_memory=False)
    off.space(space_name).add(vectors(1000), dataset="d")
    off.space(space_name).get(include_embeddings=True)
    assert off._transport.shared_memory is None
    assert off._transport.carried["shm"] == 0 and off._transport.carried["shm reply"] == 0
    monkeypatch.setenv("CHROMA_SHARED_MEMORY", "0")
    env_off = Client(shm_server.url)
    env_off.space(space_name).add(vectors(1000, seed=1), dataset="d")
    assert env_off._transport.carried["shm"] == 0
    assert env_off.space(space_name).count() == 2000


def test_a_server_with_shared_memory_off_offers_none(tmp_path, space_name):
    directory = tmp_path / "shm"
    directory.mkdir()
    server = Server(
        tmp_path / "data",
        env={"CHROMA_SHARED_MEMORY": "0", "CHROMA_SHARED_MEMORY_DIR": str(directory)},
    )
    try:
        assert httpx.get(f"{server.url}{SHM_ROUTE}").json() == {"directory": None}
        assert list(directory.iterdir()) == []
        client = Client(server.url)
        client.space(space_name).add(vectors(1000), dataset="d")
        assert client._transport.carried["shm"] == 0
        # a client that names a file anyway is told to send the body instead
        response = raw_request(server, directory, "chroma-" + "b" * 32, rows(3), space_name)
        assert response.status_code == 400 and response.headers[SHM_HEADER] == "unreadable"
        assert client.space(space_name).count() == 1000
    finally:
        server.stop()


def test_a_proof_that_does_not_match_keeps_requests_on_the_socket(tmp_path, space_name):
    directory = tmp_path / "shm"
    directory.mkdir()
    server = Server(tmp_path / "data", env={"CHROMA_SHARED_MEMORY_DIR": str(directory)})
    try:
        proof = directory / httpx.get(f"{server.url}{SHM_ROUTE}").json()["proof"]
        genuine = proof.read_bytes()
        proof.write_bytes(b"x" * len(genuine))
        client = Client(server.url)
        client.space(space_name).add(vectors(1000), dataset="d")
        assert client._transport.shared_memory is None
        assert client._transport.carried["shm"] == 0
        proof.unlink()
        gone = Client(server.url)
        gone.space(space_name).add(vectors(1000, seed=1), dataset="d")
        assert gone._transport.carried["shm"] == 0
        assert gone.space(space_name).count() == 2000
        assert leftovers(directory) == []
    finally:
        server.stop()


def test_a_file_the_server_cannot_open_is_sent_again_on_the_socket(
    shm_server, space_name, tmp_path
):
    client = Client(shm_server.url)
    space = client.space(space_name)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    transport = client._transport
    transport._shm = client_shm.SharedMemory(str(elsewhere), transport._shm.max_bytes)
    ids = space.add(vectors(1000), dataset="d")
    assert space.count() == 1000 and len(ids) == 1000
    assert transport.carried["shm"] == 0 and transport.carried["socket"] >= 1
    assert list(elsewhere.iterdir()) == []
    # later requests go straight to the socket
    space.add(vectors(1000, seed=1), dataset="d")
    assert space.count() == 2000 and transport.carried["shm"] == 0


# --- what the server refuses -------------------------------------------------------------
def test_the_server_opens_only_its_own_kind_of_file_in_its_directory(
    shm_server, space_name, tmp_path
):
    Client(shm_server.url).space(space_name)
    directory = shm_server.shm
    outside = tmp_path / "chroma-outside"
    with open(outside, "wb") as file:
        write_arrow(file, {}, rows(3))
    os.chmod(outside, 0o600)
    (directory / "chroma-link").symlink_to(outside)
    (directory / "chroma-dir").mkdir()
    shared = directory / "chroma-shared"
    with open(shared, "wb") as file:
        write_arrow(file, {}, rows(3))
    os.chmod(shared, 0o666)
    proof = httpx.get(f"{shm_server.url}{SHM_ROUTE}").json()["proof"]
    cases = {
        str(outside): "directly inside",
        "../" + outside.name: "directly inside",
        "other-" + "c" * 32: "directly inside",
        "chroma-link": "symbolic link",
        "chroma-dir": "not a regular file",
        "chroma-shared": "writable by other users",
        proof: "not a request",
    }
    try:
        for name, reason in cases.items():
            response = post_named(shm_server, name, space_name)
            assert response.status_code == 400, name
            assert response.json()["error"] == "MalformedPayload", name
            assert reason in response.json()["detail"], (name, response.json())
            assert SHM_HEADER not in response.headers, name
    finally:
        (directory / "chroma-link").unlink()
        (directory / "chroma-dir").rmdir()
        shared.unlink()
    count = httpx.post(f"{shm_server.url}/api/v1/spaces/{space_name}/count", json={})
    assert count.json()["count"] == 0


def test_an_oversized_shared_memory_request_is_refused(tmp_path, space_name):
    directory = tmp_path / "shm"
    directory.mkdir()
    server = Server(
        tmp_path / "data",
        env={"CHROMA_SHARED_MEMORY_DIR": str(directory), "CHROMA_MAX_BODY_BYTES": "100000"},
    )
    try:
        client = Client(server.url)
        space = client.space(space_name)
        with pytest.raises(PayloadTooLarge, match="shared-memory request has .* limit of 100000"):
            space.add(vectors(300), dataset="d")
        assert client._transport.carried["shm"] == 1
        assert space.count() == 0
        assert leftovers(directory) == []
    finally:
        server.stop()


def test_request_files_are_removed_after_success_and_error(shm_server, space_name):
    client = Client(shm_server.url)
    space = client.space(space_name)
    space.add(vectors(1000), dataset="d", ids=[f"a{i}" for i in range(1000)])
    assert leftovers(shm_server.shm) == []
    with pytest.raises(Conflict, match="a5"):
        space.add(vectors(1000), dataset="d", ids=[f"a{i}" for i in range(5, 1005)])
    with pytest.raises(DimensionMismatch):
        space.add(np.ones((1000, 64), np.float32), dataset="d")
    assert client._transport.carried["shm"] == 3
    assert leftovers(shm_server.shm) == []
    assert space.count() == 1000


def test_the_server_removes_its_proof_and_uncollected_replies_at_shutdown(tmp_path):
    directory = tmp_path / "shm"
    directory.mkdir()
    server = Server(tmp_path / "data", env={"CHROMA_SHARED_MEMORY_DIR": str(directory)})
    proof = httpx.get(f"{server.url}{SHM_ROUTE}").json()["proof"]
    assert [p.name for p in directory.iterdir()] == [proof]
    server.stop()
    assert list(directory.iterdir()) == []
    settings = Settings.from_env({"CHROMA_SHARED_MEMORY_DIR": str(directory)})
    shared = SharedMemory.start(settings)
    assert shared is not None
    big = pa.table({"x": np.zeros(1 << 18, np.float64)})
    name = shared.write_reply({}, big)
    assert name is not None and (directory / name).exists()
    assert shared.write_reply({}, pa.table({"x": [1.0]})) is None
    shared.close()
    assert list(directory.iterdir()) == []


# --- batches of one add -------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["embedded", "http"])
def test_batched_add_returns_ids_in_input_order(shm_server, space_name, tmp_path, mode):
    client = Client(shm_server.url) if mode == "http" else Client(path=tmp_path / "data")
    client.batch_rows = 150
    space = client.space(space_name)
    ids = [f"id{i}" for i in np.random.default_rng(3).permutation(1000)]
    data = vectors(1000)
    assert space.add(data, dataset="d", ids=np.array(ids)) == ids
    frame = space.get(include_embeddings=True)
    assert frame["id"].tolist() == ids
    np.testing.assert_array_equal(np.stack(frame["embedding"]), data)
    generated = space.add(vectors(1000, seed=1), dataset="d")
    assert len(set(generated)) == 1000
    assert space.get()["id"].tolist()[1000:] == generated


@pytest.mark.parametrize("mode", ["embedded", "http"])
def test_a_failing_middle_batch_says_how_many_rows_were_stored(
    shm_server, space_name, tmp_path, mode
):
    client = Client(shm_server.url) if mode == "http" else Client(path=tmp_path / "data")
    space = client.space(space_name)
    space.add(vectors(1), dataset="d", ids=["r450"])
    client.batch_rows = 100
    ids = [f"r{i}" for i in range(1000)]
    with pytest.raises(Conflict, match=r"batch from row 400; the 400 rows before it were stored"):
        space.add(vectors(1000), dataset="d", ids=ids)
    assert space.count() == 401
    assert sorted(space.get()["id"]) == sorted(["r450", *ids[:400]])
    if mode == "http":
        assert leftovers(shm_server.shm) == []


def test_bad_input_in_a_later_batch_stores_nothing(shm_server, space_name):
    client = Client(shm_server.url, batch_rows=100)
    space = client.space(space_name)
    ids = [f"r{i}" for i in range(1000)]
    cases = [
        (InvalidInput, "ids must not be empty", {"ids": [*ids[:999], ""]}),
        (InvalidInput, "dataset must not be empty", {"dataset": ["d"] * 999 + [""]}),
        (InvalidInput, "longer than", {"ids": [*ids[:999], "x" * 600]}),
        (InvalidInput, "labels is longer than", {"ids": ids, "labels": ["a"] * 999 + ["b" * 5000]}),
    ]
    for error, message, fields in cases:
        arguments = {"dataset": "d", **fields}
        with pytest.raises(error, match=message):
            space.add(vectors(1000), **arguments)
    bad = vectors(1000)
    bad[950, 3] = np.nan
    with pytest.raises(InvalidInput, match="first: row 950"):
        space.add(bad, dataset="d")
    assert space.count() == 0
    assert client._transport.carried["shm"] == 0


TRUNCATED_AFTER_READ = """
import os, sys
import numpy as np, pyarrow as pa
from chroma_core.shared_memory import SharedMemory
from chroma_wire.protocol import write_arrow

directory = sys.argv[1]
shared = SharedMemory(directory, 1 << 30)
table = pa.table({"embedding": pa.FixedSizeListArray.from_arrays(
    pa.array(np.ones(1_000_000, np.float32)), 100)})
path = os.path.join(directory, "chroma-request")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
with open(fd, "wb") as file:
    write_arrow(file, {}, table)
_, read = shared.read("chroma-request")
os.truncate(path, 4096)  # the client cuts its file once the server has read the request
total = float(np.asarray(read.column("embedding").combine_chunks().flatten()).sum())
print(total)
"""


def test_a_request_file_truncated_after_the_server_read_it_never_takes_the_server_down(
    tmp_path,
):
    # a map of the file would fault (SIGBUS, the process killed) on the first page beyond
    # the cut it touched; the server's copy is its own
    done = subprocess.run(
        [sys.executable, "-c", TRUNCATED_AFTER_READ, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert float(done.stdout) == 1_000_000.0


def test_replies_are_parked_only_for_clients_that_read_the_directory(shm_server, space_name):
    client = Client(shm_server.url)
    client.space(space_name).add(vectors(5_000))  # a reply of some 2.5 MB of vectors
    url = f"{shm_server.url}/api/v1/spaces/{space_name}/get"
    body = {"include_embeddings": True}
    for header in ("accept", "accept 0123", "accept " + "0" * 64, ""):
        reply = httpx.post(url, json=body, headers={SHM_REPLY_HEADER: header})
        assert reply.status_code == 200 and SHM_REPLY_HEADER not in reply.headers
        assert len(reply.content) > 2_000_000
    assert leftovers(shm_server.shm) == []
    # the client that negotiated gets its reply through a file, and takes it
    assert len(client.space(space_name).get(include_embeddings=True)) == 5_000
    assert client._transport.carried["shm reply"] == 1
    assert leftovers(shm_server.shm) == []


def test_parked_replies_are_capped_and_swept(tmp_path):
    from chroma_core.shared_memory import REPLY_LIFETIME, SharedMemory

    table = pa.table({"x": pa.array(np.zeros(1 << 19, np.float32))})  # 2 MiB
    shared = SharedMemory(str(tmp_path), max_bytes=5 << 20)
    try:
        first, second = shared.write_reply({}, table), shared.write_reply({}, table)
        assert first and second
        # a third would park more than max_bytes: it goes on the socket
        assert shared.write_reply({}, table) is None
        assert shared.parked() == (2, 2 * table.nbytes)
        os.unlink(tmp_path / first)  # its client took it
        shared.sweep()
        assert shared.parked() == (1, table.nbytes)
        assert shared.write_reply({}, table) is not None
        # a minute on, what no client took is removed
        shared.sweep(now=time.monotonic() + REPLY_LIFETIME + 1)
        assert shared.parked() == (0, 0)
        assert leftovers(tmp_path) == []
    finally:
        shared.close()
