"""Clients that stop sending or stop reading, against a real server on loopback: each is
dropped after the client timeout, the connection cap holds, and the server's descriptors
and replies are let go. Loops are bounded; the timeout is a second here."""

from __future__ import annotations

import os
import socket
import time

import httpx
import numpy as np
import pytest

from chroma_client import Client
from tests.conftest import Server

TIMEOUT = 1.0
CAP = 24


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {
        "CHROMA_CLIENT_TIMEOUT_SECONDS": str(TIMEOUT),
        "CHROMA_MAX_CONNECTIONS": str(CAP),
        "CHROMA_SHARED_MEMORY": "0",
    }
    srv = Server(tmp_path_factory.mktemp("slow") / "data", env=env)
    yield srv
    srv.stop()


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed ``sock`` within ``seconds``, and what it sent first."""
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
        return True, received
    except TimeoutError:
        return False, received
    except ConnectionResetError:
        return True, received


def open_descriptors(server: Server) -> int:
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


def test_a_connection_that_sends_nothing_or_half_a_head_is_closed(server):
    silent, halfway = connect(server), connect(server)
    halfway.sendall(b"POST /api/v1/spaces/x/count HTTP/1.1\r\nHost: x\r\nContent-Ty")
    for sock in (silent, halfway):
        closed, received = closed_within(sock, TIMEOUT * 10)
        assert closed and received == b""
        sock.close()
    assert "no request head within 1 s" in server.log.read_text()


def test_a_body_that_stops_arriving_is_answered_408(server):
    sock = connect(server)
    sock.sendall(
        b"POST /api/v1/spaces/x/count HTTP/1.1\r\nHost: x\r\n"
        b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"where": '
    )
    closed, received = closed_within(sock, TIMEOUT * 10)
    sock.close()
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert b"RequestTimeout" in received and b"CHROMA_CLIENT_TIMEOUT_SECONDS" in received


def test_an_idle_connection_between_requests_is_closed_too(server):
    sock = connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    closed, received = closed_within(sock, TIMEOUT * 10)
    sock.close()
    assert closed and received.startswith(b"HTTP/1.1 200")


def test_connections_beyond_the_cap_are_refused_and_stalled_ones_let_go(server):
    before = open_descriptors(server)
    stalled = [connect(server) for _ in range(CAP + 16)]
    for sock in stalled:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
    time.sleep(0.2)
    busy = httpx.get(f"{server.url}/healthz")
    assert busy.status_code == 503
    deadline = time.monotonic() + TIMEOUT * 20
    while httpx.get(f"{server.url}/healthz").status_code != 200:
        assert time.monotonic() < deadline, "stalled connections were never closed"
        time.sleep(0.1)
    for sock in stalled:
        sock.close()
    time.sleep(0.2)
    assert open_descriptors(server) <= before + 2


def test_a_client_that_stops_reading_its_reply_is_dropped(server):
    rng = np.random.default_rng(0)
    space = Client(server.url).space("big")
    space.add(rng.normal(size=(30_000, 128)).astype(np.float32))  # some 16 MB of vectors
    sock = connect(server)
    # a small receive buffer, never read: the reply fills it and the server's side
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    body = b'{"include_embeddings": true}'
    sock.sendall(
        b"POST /api/v1/spaces/big/get HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    deadline = time.monotonic() + TIMEOUT * 30
    while "it took none of its reply" not in server.log.read_text():
        assert time.monotonic() < deadline, "the stalled reader was never dropped"
        time.sleep(0.1)
    sock.close()
    # the server goes on serving everyone else
    assert space.count() == 30_000
