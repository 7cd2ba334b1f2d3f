"""Triggers reach a real webhook receiver and a Parquet manifest; failures are recorded."""

from __future__ import annotations

import socket

import numpy as np
import pyarrow.parquet as pq
import pytest

from chroma_client import Client
from tests.webhook_receiver import Receiver


def scored_space(client):
    rng = np.random.default_rng(0)
    space = client.space("s")
    space.add(
        rng.normal(size=(40, 4)),
        dataset="train",
        labels=["a", "b"] * 20,
        input_uris=[f"t/{i}" for i in range(40)],
    )
    space.add(
        rng.normal(size=(10, 4)),
        dataset="prod",
        context="triage",
        inferences="a",
        input_uris=[f"p/{i}" for i in range(10)],
    )
    space.compute_priorities(k=5)
    return space


@pytest.fixture
def receiver():
    r = Receiver([503, 200])
    yield r
    r.close()


def test_webhook_is_retried_then_delivered_and_manifest_written(tmp_path, monkeypatch, receiver):
    monkeypatch.setenv("CHROMA_WEBHOOK_URL", receiver.url)
    monkeypatch.setattr("chroma_triggers.webhook.BACKOFF_SECONDS", 0.01)
    client = Client(path=tmp_path / "data")
    space = scored_space(client)
    trigger = space.trigger_retraining(n=4, note="relabel")
    hook = trigger.deliveries["webhook"]
    assert hook["ok"] is True and hook["attempts"] == 2 and hook["status_code"] == 200
    sent = receiver.bodies[-1]
    assert sent["trigger"]["id"] == trigger.id and sent["trigger"]["note"] == "relabel"
    assert [item["id"] for item in sent["items"]] == client.trigger_items(trigger.id)["id"].tolist()
    assert {"input_uri", "dataset", "label", "inference", "priority"} <= set(sent["items"][0])

    manifest = trigger.deliveries["manifest"]
    table = pq.read_table(manifest["path"])
    assert table.num_rows == 4
    assert table.column("id").to_pylist() == client.trigger_items(trigger.id)["id"].tolist()
    assert table.schema.metadata[b"chroma.trigger_id"] == str(trigger.id).encode()
    client.close()


def test_unreachable_webhook_is_recorded_as_failed(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CHROMA_WEBHOOK_URL", f"http://127.0.0.1:{port}/nowhere")
    monkeypatch.setenv("CHROMA_WEBHOOK_RETRIES", "2")
    monkeypatch.setattr("chroma_triggers.webhook.BACKOFF_SECONDS", 0.01)
    client = Client(path=tmp_path / "data")
    trigger = scored_space(client).trigger_retraining(n=2)
    hook = trigger.deliveries["webhook"]
    assert hook["ok"] is False and hook["attempts"] == 2 and "ConnectError" in hook["error"]
    assert client.triggers()["trigger"].iloc[0].deliveries["webhook"]["ok"] is False
    assert trigger.status == "pending"
    client.close()


def test_refused_payload_is_not_retried(tmp_path, monkeypatch):
    r = Receiver([400, 200])
    try:
        monkeypatch.setenv("CHROMA_WEBHOOK_URL", r.url)
        client = Client(path=tmp_path / "data")
        trigger = scored_space(client).trigger_retraining(n=2)
        assert trigger.deliveries["webhook"]["attempts"] == 1
        assert trigger.deliveries["webhook"]["ok"] is False
        client.close()
    finally:
        r.close()


def test_handlers_can_be_switched_off(tmp_path, monkeypatch):
    monkeypatch.setenv("CHROMA_TRIGGER_HANDLERS", "")
    client = Client(path=tmp_path / "data")
    trigger = scored_space(client).trigger_retraining(n=2)
    assert trigger.deliveries == {}
    client.close()
