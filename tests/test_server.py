"""The HTTP server itself: routes, protocol checks, limits and malformed bodies."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from chroma_client import Client, transport
from chroma_client.errors import (
    ConnectionFailed,
    PayloadTooLarge,
    ProtocolMismatch,
)
from chroma_wire.protocol import ARROW_TYPE, PROTOCOL_HEADER, PROTOCOL_VERSION, encode_arrow
from tests.conftest import Server, free_port


def test_health_version_and_plugins(server):
    assert httpx.get(f"{server.url}/healthz").json() == {"ok": True}
    version = httpx.get(f"{server.url}/api/v1/version").json()
    assert version["protocol"] == PROTOCOL_VERSION and version["store"] == "sqlite"
    names = {p["name"] for p in httpx.get(f"{server.url}/-/plugins").json()["plugins"]}
    assert {"store_sqlite", "algo_similarity", "algo_priority"} <= names


def test_server_prints_where_it_listens(server):
    text = server.log.read_text()
    assert f"listening on http://127.0.0.1:{server.port}" in text
    assert str(server.path.resolve()) in text


def test_malformed_and_truncated_arrow_bodies_are_refused(server, space_name):
    client = Client(server.url)
    space = client.space(space_name)
    space.add(np.ones((2, 4), np.float32), dataset="d")
    url = f"{server.url}/api/v1/spaces/{space_name}/rows"
    headers = {"Content-Type": ARROW_TYPE, PROTOCOL_HEADER: PROTOCOL_VERSION}
    import pyarrow as pa

    good = encode_arrow(
        {},
        pa.table(
            {
                "id": ["z"],
                "dataset": ["d"],
                "context": ["training"],
                "embedding": pa.array([[1.0, 2.0, 3.0, 4.0]]),
            }
        ),
    )
    for body in (b"not arrow at all", good[: len(good) // 2], b""):
        response = httpx.post(url, content=body, headers=headers)
        assert response.status_code == 400
        assert response.json()["error"] == "MalformedPayload"
        assert "Arrow" in response.json()["detail"]
    response = httpx.post(
        f"{server.url}/api/v1/spaces/{space_name}/count",
        content=b"{oops",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400 and response.json()["error"] == "MalformedPayload"
    response = httpx.post(
        f"{server.url}/api/v1/spaces/{space_name}/count", json={"where": None, "sneaky": 1}
    )
    assert response.status_code == 400 and "sneaky" in response.json()["detail"]
    assert space.count() == 2


def test_protocol_mismatch_is_refused_both_ways(server, monkeypatch):
    response = httpx.get(f"{server.url}/api/v1/spaces", headers={PROTOCOL_HEADER: "0"})
    assert response.status_code == 426 and response.json()["error"] == "ProtocolMismatch"
    monkeypatch.setattr(transport.protocol, "PROTOCOL_VERSION", "0")
    with pytest.raises(ProtocolMismatch, match="protocol"):
        Client(server.url).spaces()


def test_body_larger_than_the_limit_is_refused(tmp_path):
    small = Server(tmp_path / "data", env={"CHROMA_MAX_BODY_BYTES": "20000"})
    try:
        space = Client(small.url).space("s")
        with pytest.raises(PayloadTooLarge, match="limit"):
            space.add(np.ones((100, 64), np.float32), dataset="d")
        assert space.count() == 0
        space.add(np.ones((2, 64), np.float32), dataset="d")
        assert space.count() == 2
    finally:
        small.stop()


def test_unreachable_server_is_a_typed_error():
    with pytest.raises(ConnectionFailed, match="cannot reach"):
        Client(f"http://127.0.0.1:{free_port()}").spaces()


def test_unknown_store_is_a_clear_start_up_error(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    server = Path(sys.executable).with_name("chroma-server")
    done = subprocess.run(
        [str(server), "--store", "nope", "--path", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "'nope'" in done.stderr and "sqlite" in done.stderr


def test_settings_come_from_flags_over_environment():
    from chroma_core.config import Settings
    from chroma_core.plugins import plugin_manager, plugin_settings

    env = {"CHROMA_PORT": "9001", "CHROMA_HOST": "0.0.0.0", "CHROMA_TRIGGER_HANDLERS": "manifest"}
    settings = Settings.from_env(env, port=9002, webhook_retries=7)
    assert settings.port == 9002 and settings.host == "0.0.0.0"
    # a plugin's settings come the same two ways, typed by its declaration
    values = plugin_settings(plugin_manager(), settings)
    assert values["trigger_handlers"] == ("manifest",) and values["webhook_retries"] == 7
    from chroma_wire.errors import InvalidInput

    with pytest.raises(InvalidInput, match="CHROMA_PORT"):
        Settings.from_env({"CHROMA_PORT": "eighty"})
