"""The HTTP server itself: routes, protocol checks, limits and malformed bodies."""

from __future__ import annotations

import httpx
import numpy as np
import pyarrow as pa
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


def test_small_calls_answered_on_the_event_loop_match_the_workers(server, space_name, monkeypatch):
    """Small k-NN and get calls run on the event loop once the operation is quick, large or
    filtered ones on the workers: the answers and the errors are the same either way."""
    import chroma_core.app as app_module

    client = Client(server.url)
    space = client.space(space_name)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    space.add(x, dataset=["a", "b", "c"] * 100, ids=[f"r{i}" for i in range(300)])
    queries = rng.normal(size=(40, 8)).astype(np.float32)
    first = [space.nearest_neighbors(queries[i : i + 1], k=5) for i in range(20)]
    # the same queries in one call (more than INLINE_ROWS: on the workers)
    assert len(queries[:20]) > app_module.INLINE_ROWS
    together = space.nearest_neighbors(queries[:20], k=5)
    for i, alone in enumerate(first):
        expected = together[together["query"] == i]
        assert alone["id"].tolist() == expected["id"].tolist()
        assert alone["distance"].tolist() == pytest.approx(expected["distance"].tolist())
    filtered = space.nearest_neighbors(queries[:1], k=5, where={"dataset": "a"})
    assert set(filtered["dataset"]) == {"a"}
    got = space.get(ids=["r1", "r2"])
    assert got["id"].tolist() == ["r1", "r2"] and got["dataset"].tolist() == ["b", "c"]
    from chroma_client.errors import InvalidInput, NotFound

    for _ in range(3):  # errors on the quick path are the typed errors of the workers
        with pytest.raises(NotFound, match="r999"):
            space.nearest_neighbors(ids=["r999"], k=3)
        with pytest.raises(InvalidInput, match="k must be"):
            space.nearest_neighbors(queries[:1], k=0)


# Starlette's in-process test client, built on httpx, says it will move to another library
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_only_small_unfiltered_calls_of_a_quick_operation_skip_the_workers(tmp_path, monkeypatch):
    from starlette.testclient import TestClient

    import chroma_core.app as app_module
    from chroma_core.config import Settings
    from chroma_wire.protocol import encode_arrow as encode

    handed: list[str] = []
    real = app_module.run_in_threadpool

    async def counting(function, *args, **kwargs):
        handed.append(args[0] if args else function.__name__)
        return await real(function, *args, **kwargs)

    monkeypatch.setattr(app_module, "run_in_threadpool", counting)
    app = app_module.create_app(Settings.from_env(path=tmp_path / "data"))
    with TestClient(app) as http:
        base = "/api/v1/spaces/s"
        http.post("/api/v1/spaces", json={"name": "s"})
        rows = pa.table({"id": ["a", "b", "c"], "dataset": ["d"] * 3,
                         "context": ["training"] * 3,
                         "embedding": pa.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]],
                                               pa.list_(pa.float32(), 2))})  # fmt: skip
        headers = {"Content-Type": ARROW_TYPE, PROTOCOL_HEADER: PROTOCOL_VERSION}
        assert http.post(f"{base}/rows", content=encode({}, rows), headers=headers).is_success

        def query(n: int, where=None):
            table = pa.table({"embedding": pa.array([[0.1, 0.9]] * n, pa.list_(pa.float32(), 2))})
            params = {"k": 2} if where is None else {"k": 2, "where": where}
            reply = http.post(f"{base}/nearest_neighbors", content=encode(params, table),
                              headers=headers)  # fmt: skip
            assert reply.is_success, reply.text

        handed.clear()
        query(1)  # the first call of the operation goes to the workers
        query(1)
        query(1)
        assert handed == ["nearest_neighbors"]
        query(app_module.INLINE_ROWS + 1)  # too many queries
        query(1, where={"dataset": "d"})  # a filter
        assert handed == ["nearest_neighbors"] * 3
        handed.clear()
        http.post(f"{base}/get", json={"ids": ["a"]})  # a new operation: workers first
        http.post(f"{base}/get", json={"ids": ["a"]})
        http.post(f"{base}/count", json={})  # not an operation that runs inline
        assert handed == ["get", "count"]


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


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("CHROMA_CLIENT_TIMEOUT_SECONDS", "0", "CHROMA_CLIENT_TIMEOUT_SECONDS must be at least"),
        ("CHROMA_CLIENT_TIMEOUT_SECONDS", "-5", "got -5.0"),
        ("CHROMA_MAX_CONNECTIONS", "0", "CHROMA_MAX_CONNECTIONS must be at least 1"),
        ("CHROMA_MAX_BODY_BYTES", "-1", r"CHROMA_MAX_BODY_BYTES \(--max-body-bytes\)"),
    ],
)
def test_limits_that_would_refuse_every_client_stop_the_start(variable, value, named):
    from chroma_core.config import Settings
    from chroma_wire.errors import InvalidInput

    with pytest.raises(InvalidInput, match=named):
        Settings.from_env({variable: value})
