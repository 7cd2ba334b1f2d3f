import numpy as np
import pandas as pd
import pytest

from chroma_client import Client
from chroma_wire.errors import InvalidInput

DIM = 16
CLASSES = ("cat", "dog", "fox")
TRAIN_PER_CLASS = 300
OTHER_PER_CLASS = 200
SHIFT = 4.0  # training standard deviations, along one direction


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """Training: three unit-variance Gaussian clusters, labelled. Triage datasets:
    ``same`` drawn like training, ``moved`` with every class's mean moved by SHIFT, and
    ``one_moved`` with only ``cat`` moved. The model's inference is the true class."""
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((len(CLASSES), DIM)) * 6
    direction = rng.standard_normal(DIM)
    direction /= np.linalg.norm(direction)

    def draw(per_class, shifted=()):
        blocks, names = [], []
        for c, name in enumerate(CLASSES):
            x = centres[c] + rng.standard_normal((per_class, DIM))
            if name in shifted:
                x += SHIFT * direction
            blocks.append(x)
            names += [name] * per_class
        return np.vstack(blocks).astype(np.float32), names

    client = Client(path=tmp_path_factory.mktemp("drift") / "data")
    s = client.space("clusters")
    x, names = draw(TRAIN_PER_CLASS)
    s.add(x, dataset="train", context="training", labels=names, inferences=names)
    for dataset, shifted in (("same", ()), ("moved", CLASSES), ("one_moved", ("cat",))):
        x, names = draw(OTHER_PER_CLASS, shifted)
        s.add(x, dataset=dataset, context="triage", inferences=names)
    yield s
    client.close()


@pytest.fixture(scope="module")
def result(space):
    return space.run("drift", seed=3)


def row(frame: pd.DataFrame, dataset: str, name: str | None = None) -> pd.Series:
    mask = frame["dataset"] == dataset
    mask &= frame["class"].isna() if name is None else frame["class"] == name
    assert mask.sum() == 1
    return frame[mask].iloc[0]


def test_table_has_overall_and_class_rows(result):
    assert list(result.columns) == [
        "dataset",
        "context",
        "class",
        "rows",
        "train_rows",
        "mmd",
        "p_value",
        "mean_shift",
        "ood_rate",
        "expected_ood_rate",
        "drifted",
    ]
    assert len(result) == 3 * (1 + len(CLASSES))
    overall = row(result, "same")
    assert overall["rows"] == OTHER_PER_CLASS * len(CLASSES)
    assert overall["train_rows"] == TRAIN_PER_CLASS * len(CLASSES)
    assert overall["context"] == "triage"
    assert row(result, "same", "dog")["rows"] == OTHER_PER_CLASS
    assert row(result, "same", "dog")["train_rows"] == TRAIN_PER_CLASS
    assert np.allclose(result["expected_ood_rate"], 0.05)
    meta = result.attrs["meta"]
    assert meta["training_rows"] == TRAIN_PER_CLASS * len(CLASSES)
    assert meta["skipped"] == []
    assert meta["settings"]["seed"] == 3


def test_same_distribution_is_not_drifted(result):
    same = result[result["dataset"] == "same"]
    assert not same["drifted"].any()
    assert (same["p_value"] > 0.05).all()
    assert (same["ood_rate"] < 0.12).all()
    assert (same["mean_shift"] < 1.0).all()


def test_moved_dataset_is_drifted(result):
    overall = row(result, "moved")
    assert overall["drifted"]
    assert overall["p_value"] < 0.01
    assert overall["ood_rate"] > 0.3
    for name in CLASSES:
        moved = row(result, "moved", name)
        assert moved["drifted"]
        assert moved["mean_shift"] == pytest.approx(SHIFT, rel=0.25)
        assert moved["mmd"] > row(result, "same", name)["mmd"]


def test_only_the_moved_class_is_drifted(result):
    assert row(result, "one_moved", "cat")["drifted"]
    assert row(result, "one_moved", "cat")["mean_shift"] > 3
    for name in ("dog", "fox"):
        still = row(result, "one_moved", name)
        assert not still["drifted"]
        assert still["p_value"] > 0.05
        assert still["mean_shift"] < 1.0


def test_same_seed_same_answer(space, result):
    again = space.run("drift", seed=3)
    pd.testing.assert_frame_equal(again, result)


def test_where_and_min_rows(space):
    frame = space.run("drift", where={"dataset": "one_moved"}, min_rows=250)
    assert frame["dataset"].unique().tolist() == ["one_moved"]
    assert frame["class"].isna().all()
    skipped = frame.attrs["meta"]["skipped"]
    assert sorted(s["class"] for s in skipped) == list(CLASSES)
    assert all(s["rows"] == OTHER_PER_CLASS for s in skipped)


def test_by_label_without_triage_labels_gives_overall_rows_only(space):
    frame = space.run("drift", by="label", permutations=100)
    assert frame["class"].isna().all()
    assert len(frame) == 3


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"sample": 0}, "sample"),
        ({"sample": "big"}, "sample"),
        ({"permutations": -1}, "permutations"),
        ({"permutations": 10}, "permutations"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": True}, "alpha"),
        ({"min_rows": 1}, "min_rows"),
        ({"by": "colour"}, "by"),
        ({"seed": -1}, "seed"),
        ({"ood_quantile": 1.0}, "ood_quantile"),
        ({"where": "dataset = x"}, "where"),
        ({"where": {"dataset": {"$like": "x"}}}, "$like"),
        ({"bandwidth": 2}, "bandwidth"),
    ],
)
def test_bad_parameters(space, params, named):
    with pytest.raises(InvalidInput, match=named.replace("$", r"\$")):
        space.run("drift", **params)


def test_no_training_or_no_other_rows(tmp_path):
    rng = np.random.default_rng(0)
    with Client(path=tmp_path / "data") as client:
        only_triage = client.space("only_triage")
        only_triage.add(rng.standard_normal((30, 4)), dataset="t", context="triage")
        with pytest.raises(InvalidInput, match="training rows"):
            only_triage.run("drift")
        only_training = client.space("only_training")
        only_training.add(rng.standard_normal((30, 4)), dataset="t", context="training")
        with pytest.raises(InvalidInput, match="no non-training rows"):
            only_training.run("drift")
        with pytest.raises(InvalidInput, match="no non-training rows matching where"):
            only_training.run("drift", where={"dataset": "nothing"})


def test_cosine_space_ignores_vector_length(tmp_path):
    rng = np.random.default_rng(5)
    centre = rng.standard_normal(8) * 3

    def draw(n):
        return (centre + rng.standard_normal((n, 8))).astype(np.float32)

    with Client(path=tmp_path / "data") as client:
        s = client.space("directions", metric="cosine")
        s.add(draw(400), dataset="train", context="training", labels="a")
        s.add(draw(200) * 10.0, dataset="longer", context="triage", inferences="a")
        s.add(-draw(200), dataset="opposite", context="triage", inferences="a")
        frame = s.run("drift")
    assert frame.attrs["meta"]["geometry"] == "unit-normalised rows"
    assert not frame[frame["dataset"] == "longer"]["drifted"].any()
    assert frame[frame["dataset"] == "opposite"]["drifted"].all()
