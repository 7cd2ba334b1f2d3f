"""``GET /metrics`` scraped from a real server and parsed with prometheus_client's own
parser, and the JSON request log."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chroma_client import Client, Space
from chroma_client.errors import NotFound
from chroma_core.metrics import Metrics
from tests.conftest import Server

TOKEN = "metrics-token"


def scrape(url: str, **headers) -> dict[tuple, float]:
    """Every sample as ``{(name, (label, value), ...): value}``."""
    response = httpx.get(f"{url}/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, *sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def moved(before: dict, after: dict, name: str, **labels) -> float:
    key = (name, *sorted(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_counters_move_by_what_the_requests_did(guarded, space_name):
    server = guarded
    client = Client(server.url, token=TOKEN)
    before = scrape(server.url, Authorization=f"Bearer {TOKEN}")
    space = client.space(space_name)
    train = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    space.add(train, dataset="d", labels=(train[:, 0] > 0).astype(int))
    space.add(np.random.default_rng(1).normal(size=(20, 4)), dataset="p", context="triage")
    space.nearest_neighbors(train[:3], k=2)
    with pytest.raises(NotFound):
        Space(client, f"{space_name}-missing").count()
    space.compute_priorities(k=3)
    space.compute_priorities(k=3, background=True)
    space.wait_for_priorities(timeout=60)
    space.wait_for_index(timeout=60)
    trigger = space.trigger_retraining(n=2)
    client.trigger_items(trigger.id)
    client.set_trigger_status(trigger.id, "done")
    space.update(space.get(limit=1)["id"], labels="1")
    assert httpx.get(f"{server.url}/no/such/route").status_code == 404
    after = scrape(server.url, Authorization=f"Bearer {TOKEN}")

    requests = "chroma_http_requests_total"
    assert moved(before, after, requests, route="add", status="200") == 2
    assert moved(before, after, requests, route="nearest_neighbors", status="200") == 1
    assert moved(before, after, requests, route="count", status="404") == 1
    assert moved(before, after, requests, route="unmatched", status="404") == 1
    assert moved(before, after, requests, route="/metrics", status="200") == 1
    # every operation by its name, those with a number in their path too
    for op in ("trigger_retraining", "trigger_items", "set_trigger_status", "update"):
        assert moved(before, after, requests, route=op, status="200") == 1, op
    labels = {dict(key[1:]).get("route") for key in after if key[0] == requests}
    assert not {label for label in labels if label and "{" in label}, labels
    seconds = "chroma_http_request_duration_seconds"
    assert moved(before, after, f"{seconds}_count", route="add", status="200") == 2
    assert moved(before, after, f"{seconds}_sum", route="add", status="200") > 0
    # 50 added, and 1 stored anew by the update
    assert moved(before, after, "chroma_rows_added_total", space=space_name) == 51
    assert after[("chroma_space_rows", ("space", space_name))] == 50
    index = {
        state: after[("chroma_index_rows", ("space", space_name), ("state", state))]
        for state in ("indexed", "pending")
    }
    assert index == {"indexed": 50, "pending": 0}
    # computed in the foreground and in the background: both are timed
    priority = "chroma_priority_compute_seconds_count"
    assert moved(before, after, priority, space=space_name) == 2
    client.close()


def test_metrics_registry_is_shared_by_name_and_kind():
    metrics = Metrics()
    runs = metrics.counter("chroma_test_runs", "Runs.", ("space",))
    assert metrics.counter("chroma_test_runs", "Runs.", ("space",)) is runs
    with pytest.raises(ValueError, match="another kind"):
        metrics.gauge("chroma_test_runs", "Runs.", ("space",))
    runs.inc(2, space="a")
    with metrics.histogram("chroma_test_seconds", "Time.").time():
        pass
    text = metrics.read().decode()
    assert 'chroma_test_runs_total{space="a"} 2.0' in text
    assert "chroma_test_seconds_count 1.0" in text


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A server with tokens and the request log on."""
    directory = tmp_path_factory.mktemp("metrics-auth")
    server = Server(directory / "data", env={"CHROMA_AUTH_TOKENS": TOKEN}, args=("--log-requests",))
    yield server
    server.stop()


def test_metrics_want_a_token_when_the_data_routes_do(guarded):
    assert httpx.get(f"{guarded.url}/metrics").status_code == 401
    wrong = httpx.get(f"{guarded.url}/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "Unauthorized"
    samples = scrape(guarded.url, Authorization=f"Bearer {TOKEN}")
    before = samples.get(
        ("chroma_http_requests_total", ("route", "/metrics"), ("status", "401")), 0
    )
    httpx.get(f"{guarded.url}/metrics")
    samples = scrape(guarded.url, Authorization=f"Bearer {TOKEN}")
    after = samples[("chroma_http_requests_total", ("route", "/metrics"), ("status", "401"))]
    assert after - before == 1
    assert httpx.get(f"{guarded.url}/healthz").status_code == 200


def test_request_log_lines_appear_with_the_flag_only(guarded, server, space_name):
    client = Client(guarded.url, token=TOKEN)
    client.space(space_name).add(np.ones((7, 3), np.float32), dataset="d")
    client.close()
    httpx.get(f"{guarded.url}/healthz")
    lines = [json.loads(line) for line in _json_lines(guarded.log.read_text())]
    add = [line for line in lines if line["route"] == "add" and space_name in line["path"]]
    assert len(add) == 1
    assert add[0]["method"] == "POST" and add[0]["status"] == 200 and add[0]["rows"] == 7
    assert add[0]["path"] == f"/api/v1/spaces/{space_name}/rows"
    assert add[0]["duration_ms"] > 0 and add[0]["client"].startswith("127.0.0.1:")
    assert any(line["route"] == "/healthz" and line["rows"] is None for line in lines)
    # uvicorn's own access line is not written beside it
    assert "HTTP/1.1" not in guarded.log.read_text()

    quiet = Client(server.url)
    quiet.space(space_name).add(np.ones((2, 3), np.float32), dataset="d")
    quiet.close()
    assert _json_lines(server.log.read_text()) == []


def _json_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("{")]


def test_a_failed_request_is_logged_with_its_error_and_detail(guarded):
    httpx.get(f"{guarded.url}/api/v1/spaces")  # no token
    lines = [json.loads(line) for line in _json_lines(guarded.log.read_text())]
    refused = [line for line in lines if line["status"] == 401]
    assert refused and refused[-1]["error"] == "Unauthorized"
    assert "bearer token" in refused[-1]["detail"]
    ok = [line for line in lines if line["status"] == 200]
    assert ok and all("error" not in line for line in ok)


@pytest.mark.parametrize("log_requests", [False, True])
def test_no_log_line_holds_a_token_from_the_query(tmp_path, log_requests):
    secret = "s3cret-token-value"
    args = ("--log-requests",) if log_requests else ()
    server = Server(tmp_path / "data", env={"CHROMA_AUTH_TOKENS": secret}, args=args)
    try:
        for query in (f"?token={secret}", f"?x=1&access_token={secret}", f"?api_key={secret}"):
            httpx.get(f"{server.url}/{query}")
            httpx.get(f"{server.url}/api/v1/spaces{query}")
        httpx.get(f"{server.url}/healthz")
    finally:
        server.stop()
    log = server.log.read_text()
    assert secret not in log
    if not log_requests:
        # uvicorn's access lines are there, with the values hidden
        assert "token=***" in log and "api_key=***" in log and "x=1" in log


def test_a_port_in_use_is_refused_before_listening_is_announced(tmp_path):
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        run = subprocess.run(
            [str(Path(sys.executable).with_name("chroma-server")), "--port", str(port)],
            env={**os.environ, "CHROMA_PATH": str(tmp_path / "data")},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        taken.close()
    assert run.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in run.stderr and "--port" in run.stderr
    assert "listening" not in run.stdout and "Traceback" not in run.stderr


@pytest.mark.parametrize(("host", "tokens", "warned"), [
    ("0.0.0.0", "", True), ("0.0.0.0", " , ", True), ("0.0.0.0", "t0ken", False),
    ("127.0.0.1", "", False),
])  # fmt: skip
def test_listening_beyond_this_machine_without_a_token_is_warned_of(tmp_path, host, tokens, warned):
    port = socket.create_server(("127.0.0.1", 0))
    number = port.getsockname()[1]
    port.close()
    env = {**os.environ, "CHROMA_PATH": str(tmp_path / "data"), "CHROMA_AUTH_TOKENS": tokens}
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("chroma-server")), "--host", host,
         "--port", str(number)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{number}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
    finally:
        server.terminate()
        out, err = server.communicate(timeout=30)
    assert "listening on" in out
    assert ("WARNING: listening on 0.0.0.0 with no bearer token" in err) == warned, err
