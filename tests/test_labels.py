"""Labels back from labelling tools (CSV, Parquet, Label Studio, CVAT) onto stored inputs,
a trigger's inputs out as Label Studio tasks, and the whole loop: trigger, label, retrain,
score again."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from chroma_client import Client
from chroma_client.errors import InvalidInput, NotFound


def triage_space(client: Client, name: str, n: int = 6):
    space = client.space(name)
    rng = np.random.default_rng(4)
    space.add(rng.normal(size=(20, 4)).astype(np.float32), dataset="train",
              labels=["a", "b"] * 10, ids=[f"t{i}" for i in range(20)])  # fmt: skip
    ids = [f"p{i}" for i in range(n)]
    uris = [f"s3://b/{i}.jpg" for i in range(n)]
    space.add(rng.normal(size=(n, 4)).astype(np.float32), dataset="prod", context="triage",
              inferences="a", ids=ids, input_uris=uris)  # fmt: skip
    return space, ids


def labelled(space, ids) -> dict:
    got = space.get(ids=ids).set_index("id")
    label = got["label"].astype(object).where(got["label"].notna(), None)
    return {i: (label.loc[i], got.loc[i, "context"]) for i in ids}


def test_labels_from_csv_and_parquet_with_or_without_moving_into_training(
    client, space_name, tmp_path
):
    space, ids = triage_space(client, space_name)
    csv = tmp_path / "done.csv"
    csv.write_text("id,label,who\np0,cat,ann\np1,dog,bob\np2,,ann\n")
    assert space.import_labels(csv) == {"labelled": 2, "into_training": False}
    assert labelled(space, ["p0", "p1", "p2"]) == {
        "p0": ("cat", "triage"), "p1": ("dog", "triage"), "p2": (None, "triage"),
    }  # fmt: skip
    parquet = tmp_path / "done.parquet"
    pd.DataFrame({"input": ["p2", "p3"], "cls": ["cat", "cat"]}).to_parquet(parquet)
    done = space.import_labels(parquet, into_training=True, id_column="input",
                               label_column="cls")  # fmt: skip
    assert done == {"labelled": 2, "into_training": True}
    assert labelled(space, ["p2", "p3"]) == {"p2": ("cat", "training"), "p3": ("cat", "training")}
    # a DataFrame the user holds works the same
    space.import_labels(pd.DataFrame({"id": ["p4"], "label": ["dog"]}))
    assert labelled(space, ["p4"]) == {"p4": ("dog", "triage")}


def test_labels_that_name_unknown_inputs_or_clash_change_nothing(client, space_name, tmp_path):
    space, ids = triage_space(client, space_name)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\np0,cat\nnope,dog\n")
    with pytest.raises(NotFound, match="nothing was updated: 'nope'"):
        space.import_labels(bad)
    clash = tmp_path / "clash.csv"
    clash.write_text("id,label\np0,cat\np0,dog\n")
    with pytest.raises(InvalidInput, match="gives id 'p0' two labels"):
        space.import_labels(clash)
    with pytest.raises(InvalidInput, match="no column 'label'.*columns: id, lbl"):
        space.import_labels(pd.DataFrame({"id": ["p0"], "lbl": ["x"]}))
    (tmp_path / "x.txt").write_text("id,label\np0,cat\n")
    with pytest.raises(InvalidInput, match="cannot tell the format.*give format="):
        space.import_labels(tmp_path / "x.txt")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(InvalidInput, match="cannot read broken.json as label-studio"):
        space.import_labels(broken)
    assert all(label is None for label, _ in labelled(space, ids).values())


def test_a_trigger_goes_to_label_studio_and_comes_back(client, space_name, tmp_path):
    space, ids = triage_space(client, space_name)
    space.compute_priorities()
    trigger = space.trigger_retraining(n=3)
    tasks_file = tmp_path / "tasks.json"
    assert client.export_label_studio(trigger.id, tasks_file) == 3
    tasks = json.loads(tasks_file.read_text())
    items = client.trigger_items(trigger.id)
    assert [t["data"]["chroma_id"] for t in tasks] == items["id"].tolist()
    first = tasks[0]
    assert first["data"]["image"].startswith("s3://b/") and 0 <= first["data"]["priority"] <= 1
    assert first["predictions"][0]["result"][0]["value"] == {"choices": ["a"]}
    # what Label Studio exports after labelling: the tasks with annotations; a cancelled
    # one and an older one do not count
    export = []
    for number, task in enumerate(tasks):
        task = {"id": 100 + number, **task}
        task["annotations"] = [
            {"id": 1, "created_at": "2026-12-01T10:00:00Z", "was_cancelled": False,
             "result": [{"type": "choices", "value": {"choices": ["old"]}}]},
            {"id": 2, "created_at": "2026-12-02T10:00:00Z", "was_cancelled": False,
             "result": [{"type": "choices", "value": {"choices": [f"b{number}"]}}]},
            {"id": 3, "created_at": "2026-12-03T10:00:00Z", "was_cancelled": True,
             "result": [{"type": "choices", "value": {"choices": ["cancelled"]}}]},
        ]  # fmt: skip
        export.append(task)
    export.append({"id": 200, "data": {"chroma_id": "p5"}, "annotations": []})  # unlabelled
    exported = tmp_path / "project-1-at-2026-12-05.json"
    exported.write_text(json.dumps(export))
    assert space.import_labels(exported, into_training=True)["labelled"] == 3
    now = labelled(space, items["id"].tolist())
    assert [now[i] for i in items["id"]] == [(f"b{k}", "training") for k in range(3)]


def test_labels_from_a_cvat_export_match_input_uris(client, space_name, tmp_path):
    space, ids = triage_space(client, space_name)
    xml = tmp_path / "annotations.xml"
    xml.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>'
        '<image id="0" name="s3://b/1.jpg" width="8" height="8"><tag label="dog" /></image>'
        '<image id="1" name="p4" width="8" height="8"><tag label="cat" /></image>'
        '<image id="2" name="s3://b/2.jpg" width="8" height="8"></image>'
        "</annotations>"
    )
    assert space.import_labels(xml)["labelled"] == 2
    assert labelled(space, ["p1", "p4", "p2"]) == {
        "p1": ("dog", "triage"), "p4": ("cat", "triage"), "p2": (None, "triage"),
    }  # fmt: skip
    unknown = tmp_path / "other.xml"
    unknown.write_text('<annotations><image id="0" name="s3://x.jpg"><tag label="a"/></image>'
                       "</annotations>")  # fmt: skip
    with pytest.raises(NotFound, match="match no input's id or input_uri.*'s3://x.jpg'"):
        space.import_labels(unknown)


def test_the_loop_twice_lowers_the_error_rate_among_the_top_priorities(tmp_path):
    """Production inputs from a region the training set lacks, where the model is wrong.
    Each round: a trigger takes the top priorities, a labeller labels them (the truth),
    they join training, the model is retrained (nearest class mean of the training
    inputs) and infers again, and priorities are computed again. The share of model
    errors among the top priorities falls round after round."""
    rng = np.random.default_rng(11)
    centres = {"a": np.array([4.0, 0, 0, 0]), "b": np.array([-4.0, 0, 0, 0]),
               # class "a" also lives here, but training has none of it yet
               "a_far": np.array([-2.0, 7.0, 0, 0])}  # fmt: skip
    client = Client(path=tmp_path / "data")
    space = client.space("loop")
    train = np.vstack([centres["a"] + rng.normal(size=(100, 4)),
                       centres["b"] + rng.normal(size=(100, 4))])  # fmt: skip
    space.add(train.astype(np.float32), dataset="v1", labels=["a"] * 100 + ["b"] * 100)
    n = 300
    truth = rng.choice(["a", "b", "a_far"], n, p=[0.4, 0.4, 0.2])
    x = (np.stack([centres[t] for t in truth]) + rng.normal(size=(n, 4))).astype(np.float32)
    true_label = np.where(truth == "a_far", "a", truth)
    ids = [f"q{i}" for i in range(n)]
    truth_of = dict(zip(ids, true_label, strict=True))

    def retrain_and_infer() -> np.ndarray:
        """The model: nearest class mean of the training inputs as stored now."""
        stored = space.get(where={"context": "training"}, include_embeddings=True)
        vectors = np.stack(stored["embedding"].to_numpy())
        classes = sorted(set(stored["label"]))
        means = np.stack([vectors[(stored["label"] == c).to_numpy()].mean(0) for c in classes])
        return np.array(classes)[((x[:, None, :] - means[None]) ** 2).sum(2).argmin(1)]

    inference = retrain_and_infer()
    assert (inference != true_label).sum() > 40  # the far region is called "b"
    space.add(x, dataset="prod", context="triage", inferences=inference.tolist(), ids=ids)

    def error_rate_at_top(k: int = 30) -> float:
        top = space.priorities(n=k, where={"context": "triage"})
        return float(np.mean([inf != truth_of[i] for i, inf in zip(top["id"], top["inference"],
                                                                     strict=True)]))  # fmt: skip

    space.compute_priorities()
    rates = [error_rate_at_top()]
    for _ in range(2):
        trigger = space.trigger_retraining(n=30, where={"context": "triage"})
        items = client.trigger_items(trigger.id)
        labels_file = tmp_path / f"labels-{trigger.id}.csv"
        pd.DataFrame({"id": items["id"], "label": [truth_of[i] for i in items["id"]]}).to_csv(
            labels_file, index=False
        )
        assert space.import_labels(labels_file, into_training=True)["labelled"] == 30
        assert space.priority_status()["stale"] > 0
        client.set_trigger_status(trigger.id, "done")
        # the retrained model infers again on what is still in triage
        still = space.get(where={"context": "triage"})["id"].tolist()
        again = dict(zip(ids, retrain_and_infer(), strict=True))
        space.update(still, inferences=[again[i] for i in still])
        space.compute_priorities(only_new=True)
        assert space.priority_status()["stale"] == 0
        rates.append(error_rate_at_top())
    client.close()
    # measured: 1.0, then 0.47, then 0.0
    assert rates[0] > 0.8, rates
    assert rates[1] < rates[0] and rates[2] <= rates[1], rates
    assert rates[2] < 0.5 * rates[0], rates


def test_a_trigger_says_what_is_labelled_and_is_done_when_all_is(client, space_name):
    space, ids = triage_space(client, space_name)
    space.compute_priorities()
    trigger = space.trigger_retraining(n=3)
    listed = client.triggers(space_name)
    assert listed.columns[-1] == "trigger" and listed["trigger"].iloc[0].id == trigger.id
    assert listed[["id", "status", "count", "labelled"]].values.tolist() == [
        [trigger.id, "pending", 3, 0]
    ]
    items = client.trigger_items(trigger.id)
    assert not items["labelled"].any() and items["label_now"].isna().all()
    first, *rest = items["id"].tolist()
    space.update([first], labels="cat")
    items = client.trigger_items(trigger.id).set_index("id")
    assert items.loc[first, "labelled"] and items.loc[first, "label_now"] == "cat"
    assert not items.loc[rest, "labelled"].any()
    listed = client.triggers(space_name)
    assert listed["labelled"].tolist() == [1] and listed["status"].tolist() == ["pending"]
    # an input outside the trigger changes nothing of it
    other = next(i for i in ids if i not in items.index)
    space.update([other], labels="dog")
    assert client.triggers(space_name)["status"].tolist() == ["pending"]
    space.import_labels(pd.DataFrame({"id": rest, "label": ["dog", "cat"]}), into_training=True)
    listed = client.triggers(space_name)
    assert listed["status"].tolist() == ["done"] and listed["labelled"].tolist() == [3]
