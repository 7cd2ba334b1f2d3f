"""Confidence, margin and entropy of the model's outputs, and how they join the priority."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from chroma_algo_priority.outputs import uncertainty
from chroma_client import Client


def test_probabilities_and_logits_give_confidence_margin_and_entropy():
    outputs = pa.array(
        [
            [0.98, 0.01, 0.01],  # sure
            [0.34, 0.33, 0.33],  # unsure
            None,  # no output
            [5.0, 5.0],  # logits, a tie
            [0.7],  # one value: nothing to compare
            [10.0, -10.0],  # logits, sure
        ],
        pa.list_(pa.float32()),
    )
    confidence, margin, entropy = uncertainty(pa.chunked_array([outputs]))
    assert confidence[0] == pytest.approx(0.98) and confidence[1] == pytest.approx(0.34)
    assert confidence[3] == pytest.approx(0.5) and confidence[5] == pytest.approx(1.0)
    assert np.isnan(confidence[2]) and np.isnan(confidence[4])
    assert margin[0] < 0.1 and entropy[0] < 0.15
    assert margin[1] > 0.95 and entropy[1] > 0.99
    assert np.isnan(margin[2]) and np.isnan(entropy[2])
    assert margin[3] == pytest.approx(1.0) and entropy[3] == pytest.approx(1.0)
    assert np.isnan(margin[4])
    assert margin[5] < 1e-6 and entropy[5] < 1e-6


def test_unsure_outputs_raise_an_input_above_its_sure_twin(tmp_path):
    rng = np.random.default_rng(3)
    client = Client(path=tmp_path)
    space = client.space("s")
    train = np.vstack([rng.normal(4, 1, (100, 4)), rng.normal(-4, 1, (100, 4))])
    space.add(train, dataset="train", labels=["a"] * 100 + ["b"] * 100)
    twin = rng.normal(4, 1, (1, 4))
    sure, unsure = space.add(
        np.vstack([twin, twin]),
        dataset="prod",
        context="triage",
        inferences="a",
        outputs=np.array([[0.99, 0.01], [0.5, 0.5]]),
    )
    (plain,) = space.add(twin, dataset="prod", context="triage", inferences="a")
    summary = space.compute_priorities(k=5)
    assert summary["with_outputs"] == 2 and summary["scored"] == 3
    scores = space.priorities(n=None).set_index("id")
    assert scores.loc[unsure, "priority"] > scores.loc[sure, "priority"]
    assert scores.loc[unsure, "entropy"] == pytest.approx(1.0)
    assert np.isnan(scores.loc[plain, "margin"])

    # the geometric mean of the training inputs' backing (the neighbours' support mixed
    # with the probe's) and the model's confidence backs it
    def inputs(row):
        weight = scores.loc[row, "vote_weight"]
        return weight * scores.loc[row, "support"] + (1 - weight) * scores.loc[row, "probe_support"]

    for row in (sure, unsure):
        backing = np.sqrt(inputs(row) * scores.loc[row, "confidence"])
        expected = 1 - backing * (1 - scores.loc[row, "novelty"])
        assert scores.loc[row, "priority"] == pytest.approx(expected)
    assert scores.loc[plain, "priority"] == pytest.approx(
        1 - inputs(plain) * (1 - scores.loc[plain, "novelty"])
    )
    client.close()


def test_new_labelled_training_rows_refresh_stale_scores_in_the_background(tmp_path, monkeypatch):
    import time

    monkeypatch.setenv("CHROMA_PRIORITY_REFRESH_SECONDS", "1.0")
    rng = np.random.default_rng(4)
    client = Client(path=tmp_path)
    space = client.space("s")
    space.add(rng.normal(0, 1, (60, 4)), dataset="train", labels=["a", "b"] * 30)
    space.add(rng.normal(0, 1, (10, 4)), dataset="prod", context="triage", inferences="a")
    never = client.space("never-scored")
    never.add(rng.normal(0, 1, (10, 4)), dataset="train", labels=["a", "b"] * 5)
    space.compute_priorities(k=3)
    # labelled training rows make the scores stale, and a refresh follows by itself
    space.add(rng.normal(0, 1, (5, 4)), dataset="train", labels="a")
    space.add(rng.normal(0, 1, (5, 4)), dataset="train", labels="b")
    assert space.priority_status()["stale"] == 10
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = space.priority_status()
        if status["stale"] == 0 and (status["job"] or {}).get("state") == "done":
            break
        time.sleep(0.05)
    assert status["stale"] == 0 and status["job"]["state"] == "done"
    assert status["job"]["summary"]["k"] == 3  # the parameters of the last run
    # unlabelled training rows change nothing the scores depend on
    space.add(rng.normal(0, 1, (2, 4)), dataset="train")
    time.sleep(1.5)
    assert space.priority_status()["job"]["number"] == status["job"]["number"]
    assert never.priority_status()["job"] is None
    client.close()


def test_labels_written_back_into_training_refresh_the_scores_in_the_background(
    tmp_path, monkeypatch
):
    import time

    monkeypatch.setenv("CHROMA_PRIORITY_REFRESH_SECONDS", "1.0")
    rng = np.random.default_rng(6)
    client = Client(path=tmp_path)
    space = client.space("s")
    space.add(rng.normal(0, 1, (60, 4)), dataset="train", labels=["a", "b"] * 30)
    ids = space.add(rng.normal(0, 1, (10, 4)), dataset="prod", context="triage", inferences="a")
    space.compute_priorities(k=3)
    # two triage inputs labelled and moved into training: the training set changed
    space.update(ids[:2], labels="b", context="training")
    status = space.priority_status()
    assert status["stale"] == 8
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = space.priority_status()
        if status["stale"] == 0 and (status["job"] or {}).get("state") == "done":
            break
        time.sleep(0.05)
    assert status["stale"] == 0 and status["scored"] == 8
    assert set(space.priorities(n=None)["id"]) == set(ids[2:])
    client.close()


def test_rows_moved_out_of_training_or_deleted_refresh_the_scores_in_the_background(
    tmp_path, monkeypatch
):
    import time

    monkeypatch.setenv("CHROMA_PRIORITY_REFRESH_SECONDS", "1.0")
    rng = np.random.default_rng(7)
    client = Client(path=tmp_path)
    space = client.space("s")
    training = space.add(rng.normal(0, 1, (60, 4)), dataset="train", labels=["a", "b"] * 30)
    space.add(rng.normal(0, 1, (10, 4)), dataset="prod", context="triage", inferences="a")
    space.compute_priorities(k=3)

    def refreshed(after: int) -> dict:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = space.priority_status()
            job = status["job"] or {}
            if status["stale"] == 0 and job.get("state") == "done" and job["number"] > after:
                return status
            time.sleep(0.05)
        raise AssertionError(f"no refresh: {space.priority_status()}")

    # a labelled training row moved out of training: the training set shrank
    space.update(training[:2], context="triage")
    assert space.priority_status()["stale"] == 10
    first = refreshed(0)
    assert first["scored"] == 12
    # labelled training rows deleted: the same
    space.delete(ids=training[2:4])
    assert space.priority_status()["stale"] == 12
    assert refreshed(first["job"]["number"])["scored"] == 12
    client.close()
