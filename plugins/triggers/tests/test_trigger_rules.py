"""Trigger rules record retraining triggers by themselves as data arrives: each input goes
to at most one trigger of a rule, a restart never fires a rule again for what it already
fired on, and rule-made triggers go through the handlers like any other."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from chroma_client import Client
from chroma_client.errors import InvalidInput, NotFound
from tests.stores import STORES, store_environment
from tests.webhook_receiver import Receiver

DIM = 8


def wait_until(check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def training(space, n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    labels = np.where(x[:, 0] > 0, "pos", "neg").tolist()
    space.add(x, dataset="train", labels=labels, ids=[f"t{seed}-{i}" for i in range(n)])


def triage(space, n: int, prefix: str, seed: int, dataset: str = "prod", shift: float = 0.0):
    """``n`` triage rows, their inference the opposite of their side: high priorities."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    x[:, 1] += shift
    inference = np.where(x[:, 0] > 0, "neg", "pos").tolist()
    ids = [f"{prefix}{i}" for i in range(n)]
    space.add(x, dataset=dataset, context="triage", inferences=inference, ids=ids)
    return ids


def rule_triggers(client, space: str, rule: str):
    found = client.triggers(space=space)["trigger"]
    return [t for t in found if t.selection.get("rule", {}).get("name") == rule]


def items_of(client, triggers) -> list[list[str]]:
    return [client.trigger_items(t.id)["id"].tolist() for t in triggers]


@pytest.fixture
def environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CHROMA_RULE_SECONDS", "0.05")
    monkeypatch.setenv("CHROMA_PRIORITY_REFRESH_SECONDS", "0")
    return tmp_path


@pytest.mark.parametrize("store", STORES)
def test_a_priority_rule_fires_once_per_n_new_inputs_and_not_again_after_a_restart(
    environment, monkeypatch, store
):
    for key, value in store_environment(store, environment / "data").items():
        monkeypatch.setenv(key, value)
    with Client(path=environment / "data") as client:
        space = client.space("live")
        training(space)
        rule = space.add_trigger_rule("hot", "priority", 10, min_priority=0.5)
        assert rule["when"] == "priority" and rule["n"] == 10
        space.score_on_arrival(k=10)
        ids = triage(space, 45, "a", seed=1)
        qualifying = wait_until(
            lambda: (
                len(space.priorities(n=None, min_priority=0.5)) >= 40
                and len(rule_triggers(client, "live", "hot")) == 4
            )
        )
        assert qualifying, space.trigger_rules().to_dict("records")
        fired = rule_triggers(client, "live", "hot")
        held = items_of(client, fired)
        flat = [i for items in held for i in items]
        assert all(len(items) == 10 for items in held)
        # no input twice, every input one of those streamed, each scoring at least 0.5
        assert len(set(flat)) == 40 and set(flat) <= set(ids)
        scores = space.priorities(n=None, where={"id": {"$in": flat}})
        assert (scores["priority"] >= 0.5).all()
        listed = space.trigger_rules().set_index("name").loc["hot"]
        assert listed["fired"] == 4 and listed["last_trigger"] == max(t.id for t in fired)

    # a restart reads what the rule did from its triggers: nothing fires again
    with Client(path=environment / "data") as client:
        space = client.space("live")
        # checked by this server (a new one: no check yet until it has looked)
        assert wait_until(lambda: isinstance(space.trigger_rules().iloc[0]["checked_at"], str), 10)
        time.sleep(0.5)
        assert len(rule_triggers(client, "live", "hot")) == 4
        assert space.trigger_rules().iloc[0]["fired"] == 4
        # new inputs fill the next trigger, never with an input taken before
        more = triage(space, 12, "b", seed=2)
        assert wait_until(lambda: len(rule_triggers(client, "live", "hot")) == 5)
        newest = items_of(client, rule_triggers(client, "live", "hot")[:1])[0]
        assert len(newest) == 10 and not set(newest) & set(flat)
        assert set(newest) <= set(ids) | set(more)

        # a removed rule fires no more; its triggers stay
        space.remove_trigger_rule("hot")
        triage(space, 30, "c", seed=3)
        space.compute_priorities(k=10)
        time.sleep(0.5)
        assert len(rule_triggers(client, "live", "hot")) == 5
        assert space.trigger_rules().empty


def test_a_schedule_rule_fires_each_period_with_inputs_not_taken_before(environment):
    with Client(path=environment / "data") as client:
        space = client.space("s")
        training(space)
        triage(space, 60, "a", seed=1)
        space.compute_priorities(k=10)
        space.add_trigger_rule("daily", "schedule", 5, every=1.0, strategy="diverse", note="label")
        assert wait_until(lambda: len(rule_triggers(client, "s", "daily")) >= 2, 30)
        second, first = rule_triggers(client, "s", "daily")[:2]
        assert first.selection["strategy"] == "diverse" and first.note == "label"
        gap = np.datetime64(second.created_at[:23]) - np.datetime64(first.created_at[:23])
        assert gap >= np.timedelta64(1000, "ms")
        a, b = items_of(client, [first, second])
        assert len(a) == 5 and len(b) == 5 and not set(a) & set(b)


def test_a_drift_rule_fires_for_the_dataset_that_drifted_only(environment, monkeypatch):
    monkeypatch.setenv("CHROMA_RULE_DRIFT_SECONDS", "0.05")
    with Client(path=environment / "data") as client:
        space = client.space("s")
        training(space, n=400)
        triage(space, 200, "same", seed=1, dataset="same")
        triage(space, 200, "far", seed=2, dataset="far", shift=4.0)
        space.compute_priorities(k=10)
        space.add_trigger_rule("same-drift", "drift", 7, dataset="same")
        space.add_trigger_rule("far-drift", "drift", 7, dataset="far")
        assert wait_until(lambda: len(rule_triggers(client, "s", "far-drift")) == 1, 60)
        (fired,) = items_of(client, rule_triggers(client, "s", "far-drift"))
        assert len(fired) == 7 and all(i.startswith("far") for i in fired)
        rules = space.trigger_rules().set_index("name")
        # the undrifted dataset was checked and did not fire; the drifted one fires at most
        # once a day (the default)
        assert rules.loc["same-drift", "fired"] == 0
        assert isinstance(rules.loc["same-drift", "checked_at"], str)
        assert rules.loc["far-drift", "every"] == 86_400
        time.sleep(0.5)
        assert len(rule_triggers(client, "s", "far-drift")) == 1
        assert rule_triggers(client, "s", "same-drift") == []


def test_a_rule_that_cannot_select_says_why_and_fires_once_it_can(environment, monkeypatch):
    monkeypatch.setattr("chroma_triggers.evaluator.RETRY_SECONDS", 0.2)
    with Client(path=environment / "data") as client:
        space = client.space("s")
        training(space)
        space.add_trigger_rule("weekly", "schedule", 3, every=604_800)

        def last_error():
            error = space.trigger_rules().iloc[0]["last_error"]
            return error if isinstance(error, str) else None  # NaN: no error yet

        error = wait_until(last_error, 10)
        assert error is not None and "no scored inputs" in error
        triage(space, 20, "a", seed=1)
        space.compute_priorities(k=10)
        # a schedule rule that found nothing tries again (within a minute; sooner here)
        assert wait_until(lambda: len(rule_triggers(client, "s", "weekly")) == 1, 10)
        time.sleep(0.3)
        assert len(rule_triggers(client, "s", "weekly")) == 1
        assert pd.isna(space.trigger_rules().iloc[0]["last_error"])


def test_rule_made_triggers_go_through_the_handlers(environment, monkeypatch):
    receiver = Receiver([200])
    try:
        monkeypatch.setenv("CHROMA_WEBHOOK_URL", receiver.url)
        with Client(path=environment / "data") as client:
            space = client.space("s")
            training(space)
            triage(space, 20, "a", seed=1)
            space.compute_priorities(k=10)
            space.add_trigger_rule("hot", "priority", 4, min_priority=0.0)
            assert wait_until(lambda: receiver.bodies, 10)
            sent = receiver.bodies[0]
            assert sent["trigger"]["selection"]["rule"]["name"] == "hot"
            assert len(sent["items"]) == 4
            (made,) = rule_triggers(client, "s", "hot")[-1:]
            assert made.deliveries["webhook"]["ok"] and "manifest" in made.deliveries
    finally:
        receiver.close()


def test_rules_are_checked_when_made_and_named_in_errors(environment):
    with Client(path=environment / "data") as client:
        space = client.space("s")
        bad = [
            ({"name": "x", "when": "priority", "n": 5}, "min_priority"),
            ({"name": "x", "when": "sometimes", "n": 5}, "when='sometimes'"),
            ({"name": "no spaces", "when": "schedule", "n": 5, "every": 60}, "name"),
            ({"name": "x", "when": "schedule", "n": 5}, "every"),
            ({"name": "x", "when": "schedule", "n": 0, "every": 60}, "n"),
            ({"name": "x", "when": "drift", "n": 5}, "dataset"),
            (
                {"name": "x", "when": "priority", "n": 5, "min_priority": 0.5, "dataset": "d"},
                "dataset",
            ),  # fmt: skip
            (
                {"name": "x", "when": "schedule", "n": 5, "every": 60, "where": {"a": {"$x": 1}}},
                "$x",
            ),  # fmt: skip
            (
                {"name": "x", "when": "schedule", "n": 5, "every": 60, "strategy": "best"},
                "strategy",
            ),  # fmt: skip
        ]
        for params, named in bad:
            with pytest.raises(InvalidInput, match=named.replace("$", r"\$")):
                space.add_trigger_rule(**params)
        with pytest.raises(InvalidInput, match="colour"):
            space.run("trigger_rules", action="add", name="x", when="schedule", n=1, every=60,
                      colour="red")  # fmt: skip
        assert space.trigger_rules().empty
        space.add_trigger_rule("x", "schedule", 5, every=60)
        with pytest.raises(InvalidInput, match="already holds a trigger rule named 'x'"):
            space.add_trigger_rule("x", "schedule", 5, every=60)
        with pytest.raises(NotFound, match=r"no trigger rule named 'y' \(its rules: x\)"):
            space.remove_trigger_rule("y")
        with pytest.raises(InvalidInput, match="unknown action"):
            space.run("trigger_rules", action="fire")
        # dropping the space drops its rules
        client.delete_space("s")
        assert client.space("s").trigger_rules().empty
