"""Taking embeddings out of models: a torch layer through a forward hook, any batch callable."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from chroma_client import Client, extract
from chroma_client.errors import InvalidInput


@pytest.fixture
def space(tmp_path):
    client = Client(path=tmp_path / "data")
    yield client.space("extract")
    client.close()


def stored(space) -> pd.DataFrame:
    """The space's rows in the order they were added, with embeddings."""
    frame = space.get(include_embeddings=True)
    return frame.set_index("id")


# --- embed: any callable ----------------------------------------------------------
class Projection:
    """An sklearn-like transformer: a fixed random projection that counts its calls."""

    def __init__(self, d_in: int = 5, d_out: int = 3):
        self.weights = np.random.default_rng(7).normal(size=(d_in, d_out))
        self.batches: list[int] = []

    def transform(self, batch):
        self.batches.append(len(batch))
        return np.asarray(batch, dtype=np.float64) @ self.weights


def test_embed_batches_inputs_and_keeps_per_row_fields_with_their_rows(space):
    inputs = np.random.default_rng(0).normal(size=(10, 5))
    model = Projection()
    uris = [f"s3://bucket/{i}.txt" for i in range(10)]
    labels = np.arange(10) % 3
    metadata = [{"i": i} for i in range(10)]
    ids = extract.embed(
        space,
        model.transform,
        inputs,
        batch_size=3,
        dataset="notes",
        context="production",
        input_uris=uris,
        labels=labels,
        metadata=metadata,
        ids=[f"n{i}" for i in range(10)],
    )
    assert ids == [f"n{i}" for i in range(10)]
    assert model.batches == [3, 3, 3, 1]
    rows = stored(space).loc[ids]
    np.testing.assert_allclose(
        np.stack(rows["embedding"]), inputs @ model.weights, rtol=1e-5, atol=1e-5
    )
    assert rows["input_uri"].tolist() == uris
    assert rows["label"].tolist() == [str(v) for v in labels]
    assert rows["metadata"].tolist() == metadata
    assert set(rows["dataset"]) == {"notes"} and set(rows["context"]) == {"production"}


def test_embed_slices_lists_and_dataframes_and_generates_ids_in_order(space):
    texts = [f"sentence number {i}" for i in range(7)]

    def encode(batch):
        assert isinstance(batch, list)
        return [[len(t), t.count("e"), int(t.split()[-1])] for t in batch]

    ids = extract.embed(
        space,
        encode,
        texts,
        batch_size=2,
        dataset="texts",
        labels="unlabelled",
        metadata=pd.DataFrame({"n": range(7)}),
    )
    assert len(ids) == len(set(ids)) == 7
    rows = stored(space).loc[ids]
    assert [int(e[2]) for e in rows["embedding"]] == list(range(7))
    assert [m["n"] for m in rows["metadata"]] == list(range(7))
    assert set(rows["label"]) == {"unlabelled"}


def test_embed_refuses_a_batch_with_the_wrong_number_of_rows_and_stores_none_of_it(space):
    calls = []

    def drops_a_row_in_the_second_batch(batch):
        calls.append(len(batch))
        out = np.ones((len(batch), 4))
        return out[:-1] if len(calls) == 2 else out

    with pytest.raises(InvalidInput, match=r"fn returned 3 rows for 4 inputs \(4\.\.7\)"):
        extract.embed(
            space, drops_a_row_in_the_second_batch, np.zeros((10, 2)), batch_size=4, dataset="d"
        )
    assert space.count() == 4  # the first batch only

    with pytest.raises(InvalidInput, match="one row per input"):
        extract.embed(space, lambda b: np.ones(len(b)), np.zeros((3, 2)), dataset="d")
    assert space.count() == 4


def test_embed_checks_field_lengths_before_storing_anything(space):
    with pytest.raises(InvalidInput, match="labels has 9 values for 10 inputs"):
        extract.embed(
            space,
            lambda b: np.ones((len(b), 2)),
            np.zeros((10, 2)),
            batch_size=3,
            dataset="d",
            labels=list(range(9)),
        )
    with pytest.raises(InvalidInput, match="batch_size"):
        extract.embed(space, lambda b: b, np.zeros((3, 2)), batch_size=0, dataset="d")
    with pytest.raises(InvalidInput, match="inputs are empty"):
        extract.embed(space, lambda b: b, [], dataset="d")
    with pytest.raises(InvalidInput, match="fn must be callable"):
        extract.embed(space, "encode", [1, 2], dataset="d")
    assert space.count() == 0


# --- layer: a torch module through a forward hook --------------------------------
@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.fixture
def mlp(torch):
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    return model


def batches(torch, n: int = 10, size: int = 4):
    """Labelled batches with their URIs, the way a DataLoader yields them."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=generator)
    y = torch.randint(0, 3, (n,), generator=generator)
    for start in range(0, n, size):
        stop = min(start + size, n)
        yield x[start:stop], y[start:stop], [f"img/{i}.png" for i in range(start, stop)]


@pytest.mark.torch
def test_layer_stores_the_activations_inferences_labels_and_uris(space, mlp, torch):
    mlp.train()
    seen = []
    with extract.layer(space, mlp, "2", dataset="cifar", context="training") as capture:
        for x, y, uris in batches(torch):
            logits = capture.run(x, input_uris=uris, labels=y)
            assert torch.equal(logits, mlp(x))  # a drop-in for model(x)
            assert not logits.requires_grad
            seen.append((x, y, uris))
        assert mlp.training  # eval for the forward pass only
    assert capture.rows == 10 and len(capture.ids) == len(set(capture.ids)) == 10
    x = torch.cat([b[0] for b in seen])
    rows = stored(space).loc[capture.ids]
    with torch.no_grad():
        expected = mlp[:3](x).numpy()  # Linear, ReLU, Linear: the output of layer "2"
        inferences = mlp(x).argmax(dim=1).numpy()
    np.testing.assert_allclose(np.stack(rows["embedding"]), expected, rtol=1e-6, atol=1e-6)
    assert rows["inference"].tolist() == [str(v) for v in inferences]
    assert rows["label"].tolist() == [str(v) for v in torch.cat([b[1] for b in seen]).tolist()]
    assert rows["input_uri"].tolist() == [u for b in seen for u in b[2]]
    assert set(rows["dataset"]) == {"cifar"} and all(o is None for o in rows["output"])
    assert mlp.training


@pytest.mark.torch
def test_keep_outputs_stores_softmax_rows_and_inferences_can_be_left_out(space, mlp, torch):
    x = torch.randn(5, 4)
    with extract.layer(space, mlp, "4", dataset="d") as capture:
        logits = capture.run(
            x, keep_outputs=True, inferences=False, metadata=[{"k": i} for i in range(5)]
        )
    rows = stored(space).loc[capture.ids]
    outputs = np.stack(rows["output"])
    assert outputs.shape == (5, 3)
    np.testing.assert_allclose(outputs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(outputs, torch.softmax(logits, dim=1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(np.stack(rows["embedding"]), logits.numpy(), rtol=1e-6)
    assert rows["inference"].isna().all()
    assert [m["k"] for m in rows["metadata"]] == list(range(5))


@pytest.mark.torch
def test_conv_feature_maps_are_flattened_per_input(space, torch):
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(1, 2, kernel_size=3, padding=1))
    model.add_module("act", nn.ReLU())
    model.add_module("flat", nn.Flatten())
    model.add_module("head", nn.Linear(2 * 5 * 5, 4))
    x = torch.randn(3, 1, 5, 5)
    with extract.layer(space, model, "conv", dataset="d") as capture:
        capture.run(x)
    with torch.no_grad():
        expected = model.conv(x).reshape(3, -1).numpy()
    assert space.info().dim == 2 * 5 * 5
    rows = stored(space).loc[capture.ids]
    np.testing.assert_allclose(np.stack(rows["embedding"]), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.torch
def test_tuple_outputs_capture_their_first_tensor(space, torch):
    torch.manual_seed(0)
    nn = torch.nn

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(4, 6, batch_first=True)
            self.head = nn.Linear(6, 2)

        def forward(self, x):
            sequence, _ = self.rnn(x)
            return self.head(sequence[:, -1])

    model = Encoder()
    x = torch.randn(3, 5, 4)
    with extract.layer(space, model, "rnn", dataset="d") as capture:
        capture.run(x)
    with torch.no_grad():
        expected = model.rnn(x)[0].reshape(3, -1).numpy()
    rows = stored(space).loc[capture.ids]
    np.testing.assert_allclose(np.stack(rows["embedding"]), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.torch
def test_hook_is_removed_and_modes_restored_also_when_the_block_fails(space, torch):
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    model.train()
    model[1].eval()  # a layer frozen on purpose keeps its own mode
    x = torch.randn(6, 4)
    with pytest.raises(RuntimeError, match="user code failed"):
        with extract.layer(space, model, "0", dataset="d") as capture:
            capture.run(x[:3])
            raise RuntimeError("user code failed")
    assert not model[0]._forward_hooks
    assert model.training and model[0].training and not model[1].training
    assert space.count() == 3
    model(x)  # the hook is gone: plain forward passes add nothing
    assert space.count() == 3 and capture.rows == 3
    with pytest.raises(InvalidInput, match="not open"):
        capture.run(x)


@pytest.mark.torch
def test_run_evaluates_without_dropout(space, torch):
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(4, 32), nn.Dropout(0.9), nn.Linear(32, 2))
    model.train()
    x = torch.randn(8, 4)
    with extract.layer(space, model, "1", dataset="d") as capture:
        first = capture.run(x)
        second = capture.run(x, ids=[f"again{i}" for i in range(8)])
    assert torch.equal(first, second)
    _, matrix = space.embeddings()
    with torch.no_grad():
        np.testing.assert_allclose(matrix[:8], model[0](x).numpy(), rtol=1e-6)


@pytest.mark.torch
def test_batch_rows_holds_small_batches_back_until_enough_wait(space, mlp, torch):
    with extract.layer(space, mlp, "2", dataset="d", batch_rows=6) as capture:
        for i, (x, y, uris) in enumerate(batches(torch, n=10, size=4)):
            capture.run(x, labels=y, input_uris=uris, keep_outputs=i == 2)
            counts = (space.count(), capture.pending)
            assert counts == [(0, 4), (8, 0), (8, 2)][i]
    assert space.count() == capture.rows == 10 and capture.pending == 0
    rows = stored(space).loc[capture.ids]
    assert rows["input_uri"].tolist() == [f"img/{i}.png" for i in range(10)]
    assert [o is not None for o in rows["output"]] == [False] * 8 + [True] * 2


@pytest.mark.torch
def test_rows_held_back_are_stored_when_the_block_fails_or_noted_when_they_cannot_be(
    space, mlp, torch
):
    x = torch.randn(4, 4)
    with pytest.raises(RuntimeError, match="loader broke"):
        with extract.layer(space, mlp, "2", dataset="d", batch_rows=100) as capture:
            capture.run(x, ids=["a", "b", "c", "d"])
            raise RuntimeError("loader broke")
    assert capture.rows == space.count() == 4

    with pytest.raises(RuntimeError, match="loader broke") as failure:
        with extract.layer(space, mlp, "2", dataset="d", batch_rows=100) as capture:
            capture.run(x, ids=["a", "e", "f", "g"])  # "a" is stored already
            raise RuntimeError("loader broke")
    assert "4 captured rows of layer '2' were not stored" in "".join(failure.value.__notes__)
    assert space.count() == 4 and capture.rows == 0 and capture.pending == 0


@pytest.mark.torch
def test_unknown_and_unused_layers_are_named_in_the_error(space, mlp, torch):
    with pytest.raises(InvalidInput, match=r"no layer 'fc1'.*'0', '1', '2', '3', '4'"):
        extract.layer(space, mlp, "fc1", dataset="d")

    class WithSpareHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(4, 3)
            self.spare = torch.nn.Linear(3, 3)

        def forward(self, x):
            return self.body(x)

    model = WithSpareHead()
    with pytest.raises(InvalidInput, match="did you mean 'spare'"):
        extract.layer(space, model, "spar", dataset="d")
    with pytest.raises(InvalidInput, match="layer 'spare' did not run"):
        with extract.layer(space, model, "spare", dataset="d") as capture:
            capture.run(torch.randn(2, 4))
    assert not model.spare._forward_hooks and space.count() == 0


@pytest.mark.torch
def test_per_row_fields_must_match_the_batch(space, mlp, torch):
    with extract.layer(space, mlp, "2", dataset="d") as capture:
        with pytest.raises(InvalidInput, match="labels has 3 values for 4"):
            capture.run(torch.randn(4, 4), labels=[0, 1, 2])
        with pytest.raises(InvalidInput, match="metadata has 5 entries for 4"):
            capture.run(torch.randn(4, 4), metadata=[{}] * 5)
        with pytest.raises(InvalidInput, match="input_uris has 1 values for 4"):
            capture.run(torch.randn(4, 4), input_uris=["a"])
        capture.run(torch.randn(4, 4), labels="cat")  # one value for the whole batch
    assert space.count() == 4 and set(stored(space)["label"]) == {"cat"}


@pytest.mark.torch
def test_layer_refuses_what_is_not_a_module(space):
    pytest.importorskip("torch")
    with pytest.raises(InvalidInput, match="torch.nn.Module"):
        extract.layer(space, lambda x: x, "fc", dataset="d")
