"""Bearer-token authentication: every route but /healthz refuses a request without one."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from chroma_client import Client
from chroma_wire.errors import Unauthorized
from chroma_wire.protocol import PROTOCOL_HEADER, PROTOCOL_VERSION, ROUTES, SHM_ROUTE
from tests.conftest import Server

TOKEN = "s3cret-token-1"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    directory = tmp_path_factory.mktemp("auth")
    token_file = directory / "tokens"
    token_file.write_text(f"# operators\n{TOKEN}\n\nsecond-token\n")
    server = Server(directory / "data", env={"CHROMA_AUTH_TOKEN_FILE": str(token_file)})
    yield server
    server.stop()


def _url(server: Server, path: str) -> str:
    return server.url + re.sub(r"\{(\w+)(:\w+)?\}", lambda m: "1" if m.group(2) else "s", path)


@pytest.mark.parametrize("method,path,op", [*ROUTES, ("GET", SHM_ROUTE, "shm")])
def test_every_route_refuses_a_request_without_a_valid_token(guarded, method, path, op):
    refusals = set()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        response = httpx.request(
            method, _url(guarded, path), headers={PROTOCOL_HEADER: PROTOCOL_VERSION, **headers}
        )
        assert response.status_code == 401, (op, headers, response.text)
        body = response.json()
        assert body["error"] == "Unauthorized"
        refusals.add(body["detail"])
    # the same answer whatever was wrong
    assert len(refusals) == 1


def test_health_stays_open_and_the_client_works_with_a_token(guarded):
    assert httpx.get(f"{guarded.url}/healthz").status_code == 200
    with pytest.raises(Unauthorized):
        Client(guarded.url).spaces()
    for token in (TOKEN, "second-token"):
        client = Client(guarded.url, token=token)
        space = client.space(f"authed-{token}")
        space.add(np.eye(3, dtype=np.float32), dataset="d")
        assert space.count() == 3
        assert len(space.nearest_neighbors(np.eye(3)[:1], k=2)) == 2
        client.close()


def test_a_token_file_that_cannot_be_read_stops_the_server(tmp_path):
    server = Path(sys.executable).with_name("chroma-server")
    for content in (None, "# only a comment\n\n"):
        token_file = tmp_path / "tokens"
        if content is not None:
            token_file.write_text(content)
        done = subprocess.run(
            [str(server), "--path", str(tmp_path / "data"), "--auth-token-file", str(token_file)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2
        assert "token file" in done.stderr
