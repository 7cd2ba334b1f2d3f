"""Random sequences of calls against the real client, checked against a model after each.

A hypothesis state machine adds batches (random sizes, ids drawn from a small pool so that
duplicates in a batch and across batches come up), deletes by ids and by filter, reads,
counts, searches and scores, and keeps a plain Python model of what the space must hold.
Every answer is compared with the model's: rows and their order, counts under random
``where`` filters, nearest neighbours against a numpy brute force over the live rows, and
which rows ``compute_priorities`` scores. It runs embedded on SQLite and on ClickHouse and
over HTTP on SQLite.

The profile comes from ``CHROMA_HYPOTHESIS_PROFILE`` or ``--hypothesis-profile``: ``ci``
(the default, derandomised, a few hundred steps per store) or ``long`` (2,000 examples).
"""

from __future__ import annotations

import operator
import os
import uuid
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from chroma_client import Client
from chroma_client.errors import Conflict, InvalidFilter, InvalidInput
from chroma_wire.checks import class_name
from chroma_wire.types import CATALOGUE_FIELDS
from tests.conftest import Server
from tests.stores import store_environment

DIM = 3
QUIET = {"CHROMA_PRIORITY_REFRESH_SECONDS": "0"}
# a small pool, so that ids come back: a duplicate in a batch, or an id already stored
POOL = [f"r{i}" for i in range(24)] + ["ü-1", "日本", "🙂"]
DATASETS = ["a", "b", "c"]
CONTEXTS = ["training", "triage", "prod"]
CLASSES = ["0", "1", "2"]
ORDER = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}
TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}


@dataclass
class Row:
    id: str
    dataset: str
    context: str
    label: str | None
    inference: str | None
    metadata: dict
    embedding: np.ndarray
    has_output: bool = False
    fields: dict = field(init=False)

    def __post_init__(self):
        self.fields = {
            "id": self.id,
            "dataset": self.dataset,
            "context": self.context,
            "input_uri": None,
            "inference": self.inference,
            "label": self.label,
        }


# --- filters and how the model reads them -----------------------------------------------
def matches(row: Row, where: dict | None) -> bool:
    """The documented semantics of a ``where`` filter (README, chroma_core/filters.py)."""
    if not where:
        return True
    return all(_clause(row, key, value) for key, value in where.items())


def unheld_key(rows, where: dict | None) -> str | None:
    """A metadata key of ``where`` that no row holds (with a value): a filter that finds
    nothing then is an ``InvalidFilter`` naming it, when the space has rows at all."""
    if not where or not rows:
        return None
    for key in _metadata_keys(where):
        if not any(row.metadata.get(key) is not None for row in rows):
            return key
    return None


def _metadata_keys(where: dict) -> list[str]:
    keys: list[str] = []
    for key, value in where.items():
        if key in ("$and", "$or"):
            for part in value:
                keys += [k for k in _metadata_keys(part) if k not in keys]
        elif key not in CATALOGUE_FIELDS and key not in keys:
            keys.append(key)
    return keys


def _clause(row: Row, key: str, value) -> bool:
    if key == "$and":
        return all(matches(row, w) for w in value)
    if key == "$or":
        return any(matches(row, w) for w in value)
    if isinstance(value, dict):
        return all(_compare(row, key, op, operand) for op, operand in value.items())
    return _compare(row, key, "$eq", value)


def _compare(row: Row, key: str, op: str, operand) -> bool:
    if key in CATALOGUE_FIELDS:
        # catalogue fields are text: a missing value is null, which only null equals
        have = row.fields[key]
        text = [None if v is None else class_name(v) for v in _listed(operand)]
        if op in ("$in", "$nin"):
            return (have in text) == (op == "$in")
        if op == "$eq":
            return have == text[0]
        if op == "$ne":
            return have != text[0]
        return have is not None and ORDER[op](have, text[0])
    have = row.metadata.get(key)
    if op in ("$in", "$nin"):
        return any(_equal(have, v) for v in operand) == (op == "$in")
    if op == "$eq":
        return _equal(have, operand)
    if op == "$ne":
        return not _equal(have, operand)
    # comparisons never cross types; booleans are the numbers 0 and 1
    if isinstance(operand, str):
        return isinstance(have, str) and ORDER[op](have, operand)
    return _number(have) and ORDER[op](float(have), float(operand))


def _listed(operand) -> list:
    return list(operand) if isinstance(operand, list | tuple) else [operand]


def _number(value) -> bool:
    return isinstance(value, bool | int | float)


def _equal(have, want) -> bool:
    if want is None:
        return have is None
    if isinstance(want, str):
        return isinstance(have, str) and have == want
    return _number(have) and float(have) == float(want)


CATALOGUE_VALUES = st.sampled_from(["a", "b", "c", "training", "triage", "0", "1", "2", "ü"])
METADATA_VALUES = st.one_of(
    st.integers(-3, 3),
    st.sampled_from(["x", "y", "3"]),
    st.booleans(),
    st.sampled_from([0.5, -1.5]),
)
METADATA_KEYS = st.sampled_from(["score", "tag", "flag", "w", "absent"])
ORDER_OPS = st.sampled_from(list(ORDER))

_leaf = st.one_of(
    st.builds(
        lambda k, v: {k: v},
        st.sampled_from(["dataset", "context", "label", "inference"]),
        st.one_of(CATALOGUE_VALUES, st.none()),
    ),
    st.builds(
        lambda k, op, v: {k: {op: v}},
        st.sampled_from(["dataset", "context", "label", "inference", "id"]),
        st.sampled_from(["$ne", *ORDER]),
        CATALOGUE_VALUES,
    ),
    st.builds(
        lambda k, op, vs: {k: {op: vs}},
        st.sampled_from(["dataset", "context", "label", "id"]),
        st.sampled_from(["$in", "$nin"]),
        st.lists(st.one_of(CATALOGUE_VALUES, st.sampled_from(POOL), st.none()), max_size=4),
    ),
    st.builds(lambda k, v: {k: v}, METADATA_KEYS, st.one_of(METADATA_VALUES, st.none())),
    st.builds(
        lambda k, op, v: {k: {op: v}},
        METADATA_KEYS,
        ORDER_OPS,
        st.one_of(st.integers(-3, 3), st.sampled_from(["x", "y", 0.5])),
    ),
    st.builds(
        lambda k, op, vs: {k: {op: vs}},
        METADATA_KEYS,
        st.sampled_from(["$in", "$nin"]),
        st.lists(st.one_of(METADATA_VALUES, st.none()), max_size=3),
    ),
    st.builds(lambda k, v: {k: {"$ne": v}}, METADATA_KEYS, st.one_of(METADATA_VALUES, st.none())),
)
WHERE = st.recursive(
    _leaf,
    lambda inner: st.builds(
        lambda op, items: {op: items},
        st.sampled_from(["$and", "$or"]),
        st.lists(inner, min_size=1, max_size=3),
    ),
    max_leaves=5,
)
METADATA = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "score": st.one_of(st.integers(-3, 3), st.just("3")),
            "tag": st.one_of(st.sampled_from(["x", "y", "z"]), st.just(1)),
            "flag": st.booleans(),
            "w": st.sampled_from([0.5, -1.5, 2.25]),
        },
    ),
)


# --- the machine ---------------------------------------------------------------------------
class SpaceMachine(RuleBasedStateMachine):
    """One space of the real client and the model of what it holds."""

    client: Client

    @initialize()
    def open_space(self):
        self.space = self.client.space(f"prop_{uuid.uuid4().hex[:12]}")
        self.rows: dict[str, Row] = {}  # in the order stored, which is seq order
        self.scored: set[str] = set()

    def teardown(self):
        if hasattr(self, "space"):
            self.client.delete_space(self.space.name)

    # --- writes -------------------------------------------------------------
    @rule(
        n=st.integers(1, 6),
        data=st.data(),
        seed=st.integers(0, 2**32 - 1),
        with_outputs=st.booleans(),
    )
    def add(self, n, data, seed, with_outputs):
        self._add(n, data, seed, with_outputs, CONTEXTS, [None, *CLASSES])

    @rule(n=st.integers(1, 6), data=st.data(), seed=st.integers(0, 2**32 - 1))
    def add_labelled_training(self, n, data, seed):
        self._add(n, data, seed, False, ["training"], CLASSES)

    def _add(self, n, data, seed, with_outputs, contexts, classes):
        def each(values):
            return data.draw(st.lists(st.sampled_from(values), min_size=n, max_size=n))

        generate = data.draw(st.integers(0, 4)) == 0
        ids = None if generate else each(POOL)
        datasets, contexts, labels = each(DATASETS), each(contexts), each(classes)
        inferences = each([None, *CLASSES])
        metadata = data.draw(st.lists(METADATA, min_size=n, max_size=n))
        rng = np.random.default_rng(seed)
        embeddings = rng.normal(size=(n, DIM)).astype(np.float32)
        outputs = rng.dirichlet(np.ones(3), size=n).astype(np.float32) if with_outputs else None

        def call():
            return self.space.add(
                embeddings,
                dataset=datasets,
                context=contexts,
                labels=labels,
                inferences=inferences,
                metadata=metadata,
                outputs=outputs,
                ids=ids,
            )

        if ids is not None and len(set(ids)) < n:
            with pytest.raises(InvalidInput, match="duplicates"):
                call()
            return
        stored = [i for i in (ids or []) if i in self.rows]
        if stored:
            with pytest.raises(Conflict, match="already stored"):
                call()
            return
        returned = call()
        assert len(returned) == n and (ids is None or returned == ids)
        for i, row_id in enumerate(returned):
            self.rows[row_id] = Row(
                row_id,
                datasets[i],
                contexts[i],
                labels[i],
                inferences[i],
                metadata[i] or {},
                embeddings[i],
                with_outputs,
            )

    @rule(data=st.data())
    def delete_by_ids(self, data):
        live = list(self.rows)
        chosen = data.draw(st.lists(st.sampled_from(live or POOL), max_size=4))
        chosen += data.draw(st.lists(st.sampled_from(POOL), max_size=2))
        if not chosen:
            return
        gone = {i for i in chosen if i in self.rows}
        assert self.space.delete(ids=chosen) == len(gone)
        self._forget(gone)

    @rule(where=WHERE)
    def delete_by_filter(self, where):
        gone = {i for i, row in self.rows.items() if matches(row, where)}
        unheld = None if gone else unheld_key(list(self.rows.values()), where)
        if unheld is not None:
            with pytest.raises(InvalidFilter, match=repr(unheld)):
                self.space.delete(where=where)
            return
        assert self.space.delete(where=where) == len(gone)
        self._forget(gone)

    def _forget(self, gone: set[str]) -> None:
        for row_id in gone:
            del self.rows[row_id]
        self.scored -= gone

    # --- reads --------------------------------------------------------------
    @rule(where=st.one_of(st.none(), WHERE))
    def count(self, where):
        expected = sum(matches(row, where) for row in self.rows.values())
        unheld = None if expected else unheld_key(list(self.rows.values()), where)
        if unheld is not None:
            with pytest.raises(InvalidFilter, match=repr(unheld)):
                self.space.count(where=where)
            return
        assert self.space.count(where=where) == expected

    @rule(
        where=st.one_of(st.none(), WHERE),
        limit=st.one_of(st.none(), st.integers(0, 5)),
        offset=st.integers(0, 3),
        include_embeddings=st.booleans(),
    )
    def get(self, where, limit, offset, include_embeddings):
        expected = [row for row in self.rows.values() if matches(row, where)]
        if not expected and offset == 0 and limit != 0:
            unheld = unheld_key(list(self.rows.values()), where)
            if unheld is not None:
                with pytest.raises(InvalidFilter, match=repr(unheld)):
                    self.space.get(where=where, limit=limit)
                return
        expected = expected[offset:][:limit] if limit is not None else expected[offset:]
        frame = self.space.get(
            where=where, limit=limit, offset=offset, include_embeddings=include_embeddings
        )
        assert frame["id"].tolist() == [row.id for row in expected]
        for got, row in zip(frame.to_dict("records"), expected, strict=True):
            for name in ("dataset", "context", "label", "inference"):
                value = None if pd.isna(got[name]) else got[name]
                assert value == row.fields[name], (name, got[name], row.fields[name])
            assert got["metadata"] == row.metadata
            if include_embeddings:
                assert got["embedding"].tobytes() == row.embedding.tobytes()
                assert (got["output"] is not None) == row.has_output

    @rule(ids=st.lists(st.sampled_from(POOL), min_size=1, max_size=4))
    def get_by_ids(self, ids):
        expected = [i for i in self.rows if i in set(ids)]
        assert self.space.get(ids=ids)["id"].tolist() == expected

    # --- neighbours ---------------------------------------------------------
    @rule(
        k=st.integers(1, 8),
        where=st.one_of(st.none(), WHERE),
        by_id=st.booleans(),
        data=st.data(),
        seed=st.integers(0, 2**32 - 1),
    )
    def nearest_neighbors(self, k, where, by_id, data, seed):
        if by_id and self.rows:
            asked = data.draw(
                st.lists(st.sampled_from(list(self.rows)), min_size=1, max_size=3, unique=True)
            )
            frame = self.space.nearest_neighbors(ids=asked, k=k, where=where)
            queries = [(q, self.rows[q].embedding, q) for q in asked]
        else:
            vectors = np.random.default_rng(seed).normal(size=(2, DIM)).astype(np.float32)
            frame = self.space.nearest_neighbors(vectors, k=k, where=where)
            queries = [(i, vectors[i], None) for i in range(len(vectors))]
        for query, vector, itself in queries:
            got = frame[frame["query"] == query].sort_values("rank")
            candidates = [
                row for row in self.rows.values() if row.id != itself and matches(row, where)
            ]
            truth = {row.id: float(np.linalg.norm(row.embedding - vector)) for row in candidates}
            ids, distances = got["id"].tolist(), got["distance"].to_numpy(np.float64)
            assert len(ids) == min(k, len(candidates)), (query, ids, sorted(truth.items()))
            assert set(ids) <= set(truth), "a deleted, filtered-out or self row came back"
            assert len(set(ids)) == len(ids)
            np.testing.assert_allclose(distances, [truth[i] for i in ids], **TOLERANCE)
            assert (np.diff(distances) >= -1e-5).all(), "neighbours out of order"
            if where is not None:
                # a filter matching few rows is answered exactly: the k smallest distances
                np.testing.assert_allclose(
                    distances, sorted(truth.values())[: len(ids)], **TOLERANCE
                )

    # --- priorities -----------------------------------------------------------
    @rule()
    def compute_priorities(self):
        labelled = [row for row in self.rows.values() if row.context == "training" and row.label]
        if len(labelled) < 2:
            with pytest.raises(InvalidInput, match="labelled training"):
                self.space.compute_priorities(k=3)
            return
        summary = self.space.compute_priorities(k=3)
        self.scored = {row.id for row in self.rows.values() if row.context != "training"}
        assert summary["scored"] == len(self.scored)
        if self.scored:
            assert summary["training"] == len(labelled)
            assert summary["with_outputs"] == sum(
                row.has_output for row in self.rows.values() if row.id in self.scored
            )
        self.priorities()

    @rule()
    def priorities(self):
        scored = self.space.priorities(n=None)
        assert set(scored["id"]) == self.scored
        assert len(scored) == len(self.scored)
        assert np.isfinite(scored["priority"].to_numpy(np.float64)).all()

    @invariant()
    def count_matches_the_model(self):
        if hasattr(self, "space"):
            assert self.space.count() == len(self.rows)


# --- where it runs -----------------------------------------------------------------------
def run(client: Client) -> None:
    machine = type("Machine", (SpaceMachine,), {"client": client})
    run_state_machine_as_test(machine, settings=settings())


@pytest.fixture(scope="module")
def quiet_server(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("CHROMA_")]:
            patch.delenv(key)
        server = Server(
            tmp_path_factory.mktemp("properties") / "data", env={"CHROMA_STORE": "sqlite", **QUIET}
        )
    yield server
    server.stop()


@pytest.mark.parametrize("store", ["sqlite", "clickhouse"])
def test_embedded_client_agrees_with_the_model(store, tmp_path, monkeypatch):
    for key, value in {**store_environment(store, tmp_path / "data"), **QUIET}.items():
        monkeypatch.setenv(key, value)
    with Client(path=tmp_path / "data") as client:
        run(client)


def test_http_client_agrees_with_the_model(quiet_server):
    with Client(quiet_server.url) as client:
        run(client)
