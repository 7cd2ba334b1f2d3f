"""Hostile and broken input, case by case.

Each case is one line in a table. A refused case must raise its typed error with a message
naming the problem; an accepted case must read back exactly what it stored. Either way the
rows, counts and priorities of a seeded space are the same afterwards and the service
answers the next request. The client cases run embedded and over HTTP on each store; the
protocol cases send raw HTTP to a real ``chroma-server`` on each store.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import numpy as np
import pyarrow as pa
import pytest

from chroma_client import Client, Space
from chroma_client.errors import (
    ChromaError,
    Conflict,
    DimensionMismatch,
    InvalidFilter,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
)
from chroma_wire.protocol import (
    ARROW_TYPE,
    PARAMS_KEY,
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    SHM_HEADER,
    encode_arrow,
)
from tests.conftest import Server
from tests.stores import STORES, store_environment

DIM = 4
MAX_BODY = 8 << 20
QUIET = {"CHROMA_PRIORITY_REFRESH_SECONDS": "0"}


# --- the arena: a seeded space per mode and store ---------------------------------------
class Arena:
    """A client, a space seeded with known rows and priorities, and a scratch space."""

    def __init__(self, client: Client, mode: str, store: str):
        self.c, self.mode, self.store = client, mode, store
        self.s = client.space(f"hostile_{uuid.uuid4().hex[:8]}")
        seed(self.s)
        #: what the seeded space holds: every case leaves it so
        self.expected = snapshot(self.s)
        self.scored = priorities(self.s)
        self._scratch: Space | None = None
        self._spaces: list[str] = []

    def scratch(self) -> Space:
        """A space for accepted rows, shared by the cases (each adds its own ids)."""
        if self._scratch is None:
            self._scratch = self.c.space(f"scratch_{uuid.uuid4().hex[:10]}")
        return self._scratch

    def new_space_name(self) -> str:
        """A name for a space the case makes, dropped after it."""
        name = f"made_{uuid.uuid4().hex[:10]}"
        self._spaces.append(name)
        return name

    def drop_spaces(self) -> None:
        while self._spaces:
            name = self._spaces.pop()
            if name in set(self.c.spaces()["name"]):
                self.c.delete_space(name)


def vectors(n: int, d: int = DIM, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def seed(space: Space) -> None:
    space.add(
        vectors(7),
        dataset=["train"] * 6 + ["données"],
        context="training",
        labels=[0, 1, 0, 1, 0, 1, "猫"],
        ids=[f"t{i}" for i in range(6)] + ["猫-1"],
        metadata=[{"score": i, "tag": "xy"[i % 2], "flag": i > 2, "a-b": i} for i in range(7)],
    )
    space.add(
        vectors(4, seed=1),
        dataset="prod",
        context="triage",
        ids=[f"q{i}" for i in range(4)],
        inferences=[0, 1, 1, 0],
        outputs=np.array([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5], [0.2, 0.8]], np.float32),
        input_uris=[f"s3://bucket/{i}.png" for i in range(4)],
    )
    space.compute_priorities(k=3)


def snapshot(space: Space) -> tuple[int, pa.Table]:
    """Count, and the rows with their vectors as the service sends them."""
    _, rows = space._call("get", {"include_embeddings": True})
    return space.count(), rows


def priorities(space: Space) -> pa.Table:
    _, scored = space._call("priorities", {"n": None})
    return scored.select(["id", "priority", "components"])


def assert_unchanged(before, after) -> None:
    assert before[0] == after[0]
    assert before[1].equals(after[1]), (before[1].to_pandas(), after[1].to_pandas())


@pytest.fixture(scope="module")
def limited_servers(tmp_path_factory):
    """One server per store with a small body limit, started when first needed."""
    started: dict[str, Server] = {}

    def get(store: str) -> Server:
        if store not in started:
            env = {"CHROMA_STORE": store, "CHROMA_MAX_BODY_BYTES": str(MAX_BODY), **QUIET}
            with pytest.MonkeyPatch.context() as patch:
                # an embedded client's settings (its chdb directory) are not the server's
                for key in [k for k in os.environ if k.startswith("CHROMA_")]:
                    patch.delenv(key)
                path = tmp_path_factory.mktemp(f"hostile-{store}") / "data"
                started[store] = Server(path, env=env)
        return started[store]

    yield get
    for server in started.values():
        server.stop()


@pytest.fixture(scope="module")
def arenas(tmp_path_factory, limited_servers):
    """The arena of a (mode, store), made when a test first asks for it. The cases of one
    combination run one after the other, and the last sees what all the others left."""
    made: dict[tuple[str, str], Arena] = {}

    def get(mode: str, store: str) -> Arena:
        if (mode, store) not in made:
            with pytest.MonkeyPatch.context() as patch:
                if mode == "embedded":
                    path = tmp_path_factory.mktemp(f"hostile-{store}") / "data"
                    for key, value in {**store_environment(store, path), **QUIET}.items():
                        patch.setenv(key, value)
                    client = Client(path=path)
                else:
                    client = Client(limited_servers(store).url)
            made[mode, store] = Arena(client, mode, store)
        return made[mode, store]

    yield get
    for arena in made.values():
        arena.c.close()


COMBINATIONS = [(mode, store) for store in STORES for mode in ("embedded", "http")]


# --- the cases ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[Arena], object]
    #: the error a refused case raises, None for a case that is accepted
    error: type[ChromaError] | None = None
    #: a regular expression the error message must match
    match: str = ""
    #: the modes the case applies to
    modes: tuple[str, ...] = ("embedded", "http")


def refuse(name, error, match, call, modes=("embedded", "http")) -> Case:
    return Case(name, call, error, match, modes)


def accept(name, call, modes=("embedded", "http")) -> Case:
    """``call`` asserts its own round trip; it may only change scratch spaces."""
    return Case(name, call, None, "", modes)


def nested(depth: int, leaf: object, wrap: Callable[[object], object]) -> object:
    value = leaf
    for _ in range(depth):
        value = wrap(value)
    return value


def deep_filter(depth: int) -> dict:
    return nested(depth, {"label": "0"}, lambda w: {"$and": [w]})


def deep_dict(depth: int) -> dict:
    return nested(depth, 1, lambda v: {"k": v})


def add(a: Arena, n: int = 1, **fields):
    fields.setdefault("dataset", "d")
    return a.s.add(fields.pop("embeddings", vectors(n, seed=9)), **fields)


def round_trip(a: Arena, ids=None, metadata=None, **fields) -> None:
    """Add one row with ``fields`` to the scratch space and read every field back."""
    space = a.scratch()
    fields.setdefault("dataset", "d")
    before = space.count()
    stored = space.add(vectors(1, seed=3), ids=ids, metadata=metadata, **fields)
    if ids is not None:
        assert stored == list(ids)
    assert space.count() == before + 1
    got = space.get(ids=stored)
    assert got["id"].tolist() == stored
    for name, column in [
        ("dataset", "dataset"),
        ("context", "context"),
        ("labels", "label"),
        ("input_uris", "input_uri"),
        ("inferences", "inference"),
    ]:
        if name in fields:
            assert got[column].tolist() == [fields[name]], name
    if metadata is not None:
        assert got["metadata"].tolist() == metadata
    assert space.count(where={"id": stored[0]}) == 1
    if "labels" in fields:
        assert space.count(where={"$and": [{"id": stored[0]}, {"label": fields["labels"]}]}) == 1


def model_round_trip(a: Arena, model: dict) -> None:
    space = a.c.space(a.new_space_name(), model=model)
    assert space.info().model == model
    assert a.c.spaces().set_index("name").loc[space.name, "model"] == model


def counts(where: dict, expected: int) -> Callable[[Arena], None]:
    def check(a: Arena) -> None:
        assert a.s.count(where=where) == expected
        assert len(a.s.get(where=where)) == expected

    return check


def gets(ids, expected: list[str]) -> Callable[[Arena], None]:
    def check(a: Arena) -> None:
        assert a.s.get(ids=ids)["id"].tolist() == expected

    return check


def with_batch_rows(a: Arena, rows: int, call: Callable[[], object]) -> object:
    kept = a.c.batch_rows
    a.c.batch_rows = rows
    try:
        return call()
    finally:
        a.c.batch_rows = kept


ATTACKS = [
    "' OR '1'='1",
    "'; DROP TABLE spaces; --",
    '"; DROP TABLE rows; --',
    "x') OR 1=1 --",
    "\\'; SELECT 1; --",
    "{w0:String}",
    "{q:Array(Float32)}",
    "') UNION ALL SELECT name FROM system.tables --",
    "$.metadata",
    '$."a"',
    "%",
    "_",
    "*",
    "\\",
    "/* comment */",
]

NAN_ROW = np.array([[1.0, np.nan, 0.0, 0.0]], np.float32)
SURROGATE = "\ud800"

# fmt: off
CASES: list[Case] = [
    # dimensions
    refuse("wrong dimension", DimensionMismatch, "dimension 5.*dimension 4",
           lambda a: add(a, embeddings=vectors(2, 5))),
    refuse("mixed dimensions in lists", DimensionMismatch, "mixed dimensions",
           lambda a: add(a, embeddings=[[1.0, 2.0, 3.0, 4.0], [1.0, 2.0]])),
    refuse("mixed dimensions in an Arrow list column", DimensionMismatch, "mixed dimensions",
           lambda a: add(a, embeddings=pa.array([[1.0, 2.0, 3.0, 4.0], [1.0]]))),
    refuse("one vector, not a matrix", InvalidInput, "2-D",
           lambda a: add(a, embeddings=vectors(1)[0])),
    refuse("three dimensions", InvalidInput, "2-D",
           lambda a: add(a, embeddings=np.ones((2, 2, 2)))),
    refuse("dimension zero", InvalidInput, "dimension 0",
           lambda a: add(a, embeddings=np.ones((2, 0)))),
    refuse("dimension over the limit", InvalidInput, "limit 65536",
           lambda a: add(a, embeddings=np.ones((1, 65537), np.float32))),
    refuse("query of the wrong dimension", DimensionMismatch, "dimension 3",
           lambda a: a.s.nearest_neighbors(vectors(1, 3))),
    refuse("queries of mixed dimensions", DimensionMismatch, "mixed",
           lambda a: a.s.nearest_neighbors([[1.0] * 4, [1.0] * 3])),
    # numbers
    refuse("NaN in embeddings", InvalidInput, "NaN", lambda a: add(a, embeddings=NAN_ROW)),
    refuse("inf in embeddings", InvalidInput, "infinite",
           lambda a: add(a, embeddings=np.full((1, 4), np.inf))),
    refuse("-inf in embeddings", InvalidInput, "infinite",
           lambda a: add(a, embeddings=np.full((1, 4), -np.inf))),
    refuse("float64 beyond float32", InvalidInput, "infinite",
           lambda a: add(a, embeddings=np.full((1, 4), 1e+300))),
    refuse("NaN in outputs", InvalidInput, "outputs contain NaN",
           lambda a: add(a, outputs=[[np.nan, 1.0]])),
    refuse("inf in outputs", InvalidInput, "outputs contain NaN or infinite",
           lambda a: add(a, outputs=[[np.inf, 1.0]])),
    refuse("outputs for another number of rows", InvalidInput, "outputs has 2 rows for 1",
           lambda a: add(a, outputs=[[0.5, 0.5], [0.5, 0.5]])),
    refuse("ragged outputs", DimensionMismatch, "outputs have mixed dimensions",
           lambda a: add(a, 2, outputs=[[0.5, 0.5], [1.0]])),
    refuse("NaN in queries", InvalidInput, "queries contain NaN",
           lambda a: a.s.nearest_neighbors(NAN_ROW)),
    refuse("inf in queries", InvalidInput, "queries contain NaN or infinite",
           lambda a: a.s.nearest_neighbors(np.full((1, 4), np.inf))),
    refuse("text as embeddings", InvalidInput, "must hold numbers",
           lambda a: add(a, embeddings=[["a", "b", "c", "d"]])),
    refuse("None inside embeddings", InvalidInput, "must hold numbers",
           lambda a: add(a, embeddings=[[1.0, None, 1.0, 1.0]])),
    refuse("complex embeddings", InvalidInput, "real numbers",
           lambda a: add(a, embeddings=np.ones((1, 4), np.complex64))),
    refuse("complex queries", InvalidInput, "real numbers",
           lambda a: a.s.nearest_neighbors(np.ones((1, 4), np.complex128))),
    # empty
    refuse("empty batch", InvalidInput, "empty", lambda a: add(a, embeddings=np.zeros((0, 4)))),
    refuse("empty list", InvalidInput, "empty|2-D", lambda a: add(a, embeddings=[])),
    refuse("empty queries", InvalidInput, "empty",
           lambda a: a.s.nearest_neighbors(np.zeros((0, 4)))),
    refuse("neither queries nor ids", InvalidInput, "either queries or ids",
           lambda a: a.s.nearest_neighbors()),
    refuse("both queries and ids", InvalidInput, "either queries or ids",
           lambda a: a.s.nearest_neighbors(vectors(1), ids=["t0"])),
    refuse("empty id list for neighbours", InvalidInput, "ids",
           lambda a: a.s.nearest_neighbors(ids=[])),
    refuse("delete with nothing to select", InvalidInput, "ids or where", lambda a: a.s.delete()),
    refuse("empty $and", InvalidFilter, "\\$and takes a non-empty list",
           lambda a: a.s.count(where={"$and": []})),
    refuse("empty condition", InvalidFilter, "empty condition",
           lambda a: a.s.count(where={"label": {}})),
    accept("get of no ids", gets([], [])),
    accept("delete of no ids", lambda a: a.s.delete(ids=[]) == 0 or pytest.fail("deleted")),
    accept("empty where is no filter", counts({}, 11)),
    # duplicates
    refuse("duplicate ids in a batch", InvalidInput, "duplicates",
           lambda a: add(a, 2, ids=["dup", "dup"])),
    refuse("id already stored", Conflict, "'t3'", lambda a: add(a, 2, ids=["fresh", "t3"])),
    refuse("unicode id already stored", Conflict, "猫-1", lambda a: add(a, 1, ids=["猫-1"])),
    refuse("duplicate ids across batches of one add", InvalidInput, "duplicates",
           lambda a: with_batch_rows(a, 2, lambda: add(a, 5, ids=["b0", "b1", "b2", "b3", "b0"]))),
    refuse(
        "NaN in the last batch of one add",
        InvalidInput,
        "row 4",
        lambda a: with_batch_rows(
            a, 2, lambda: add(a, embeddings=np.vstack([vectors(4), NAN_ROW]))
        ),
    ),
    accept("the same id twice in get", gets(["t1", "t1"], ["t1"])),
    accept(
        "the same id twice as neighbour queries",
        lambda a: (
            a.s.nearest_neighbors(ids=["t1", "t1"], k=2)["query"].tolist()
            == ["t1", "t1", "t1", "t1"]
            or pytest.fail("queries")
        ),
    ),
    accept("delete of an absent id", lambda a: a.s.delete(ids=["absent"]) == 0 or pytest.fail()),
    # huge strings and sizes
    refuse("id of 513 characters", InvalidInput, "ids is longer than 512",
           lambda a: add(a, ids=["i" * 513])),
    refuse("dataset of 4097 characters", InvalidInput, "dataset is longer than 4096",
           lambda a: add(a, dataset="d" * 4097)),
    refuse("label of 4097 characters", InvalidInput, "labels is longer than 4096",
           lambda a: add(a, labels=["l" * 4097])),
    refuse("input_uri of 4097 characters", InvalidInput, "input_uris is longer than 4096",
           lambda a: add(a, input_uris=["u" * 4097])),
    refuse("metadata of 65537 characters", InvalidInput, "metadata is longer than 65536",
           lambda a: add(a, metadata=[{"k": "v" * 65537}])),
    refuse("metadata key of 100,000 characters", InvalidInput, "metadata is longer",
           lambda a: add(a, metadata=[{"k" * 100000: 1}])),
    refuse("metadata nested 5,000 deep", InvalidInput, "metadata of row 0.*nested",
           lambda a: add(a, metadata=[deep_dict(5000)])),
    refuse("note of 10,001 characters", InvalidInput, "note must be a string of at most",
           lambda a: a.s.trigger_retraining(n=1, note="n" * 10001)),
    refuse("space name of 129 characters", InvalidInput, "invalid space name",
           lambda a: a.c.space("s" * 129)),
    refuse("k over 10,000", InvalidInput, "k must be between 1 and 10000",
           lambda a: a.s.nearest_neighbors(vectors(1), k=10001)),
    refuse("100,001 queries", InvalidInput, "at most 100000 queries",
           lambda a: a.s.nearest_neighbors(np.ones((100001, 4), np.float32))),
    refuse("$in of 100,001 values", InvalidFilter, "more than 100000 values",
           lambda a: a.s.count(where={"label": {"$in": [str(i) for i in range(100001)]}})),
    accept("$in of 100,000 values", counts({"label": {"$in": [str(i) for i in range(100000)]}}, 6)),
    accept("$nin of 20,000 values on metadata",
           counts({"score": {"$nin": list(range(2, 20002))}}, 6)),
    accept("get of 100,000 ids",
           gets(["q2", *(f"n{i}" for i in range(100000)), "t0"], ["t0", "q2"])),
    accept("filter value of 65,536 characters", counts({"label": "l" * 65536}, 0)),
    refuse("filter value of 65,537 characters", InvalidFilter, "longer than 65536",
           lambda a: a.s.count(where={"tag": "l" * 65537})),
    refuse("body over the server's limit", PayloadTooLarge, "limit",
           lambda a: add(a, embeddings=np.ones((3000, 1024), np.float32)), modes=("http",)),
    # unicode
    accept("accented id", lambda a: round_trip(a, ids=["ünïcødé"])),
    accept("CJK id", lambda a: round_trip(a, ids=["日本語"])),
    accept("emoji id", lambda a: round_trip(a, ids=["🙂👍🏽"])),
    accept("right-to-left id", lambda a: round_trip(a, ids=["עברית\u200f"])),
    accept("combining marks are not normalised", lambda a: round_trip(a, ids=["é"])),
    accept(
        "unicode catalogue fields",
        lambda a: round_trip(
            a,
            dataset="données",
            context="prod-日本",
            labels="猫",
            input_uris="s3://b/ß/🙂.png",
            inferences="犬",
        ),
    ),
    accept("unicode metadata keys and values",
           lambda a: round_trip(a, metadata=[{"日本": "語", "🙂": ["ü", {"ß": None}]}])),
    accept("escaped lone surrogate in metadata",
           lambda a: round_trip(a, metadata=[{SURROGATE: 1}])),
    accept("unicode label filter", counts({"label": "猫"}, 1)),
    accept("unicode dataset filter", counts({"dataset": {"$in": ["données"]}}, 1)),
    accept("unicode id in get", gets(["猫-1"], ["猫-1"])),
    refuse("lone surrogate in an id", InvalidInput, "ids.*(surrogate|Unicode)",
           lambda a: add(a, ids=[SURROGATE])),
    refuse("lone surrogate in dataset", InvalidInput, "dataset.*(surrogate|Unicode)",
           lambda a: add(a, dataset="d" + SURROGATE)),
    refuse("lone surrogate in labels", InvalidInput, "labels.*(surrogate|Unicode)",
           lambda a: add(a, labels=[SURROGATE])),
    refuse("lone surrogate in get ids", InvalidInput, "ids.*(surrogate|Unicode)",
           lambda a: a.s.get(ids=[SURROGATE])),
    refuse("lone surrogate in a filter value", InvalidFilter, "label.*(surrogate|Unicode)",
           lambda a: a.s.count(where={"label": SURROGATE})),
    refuse("lone surrogate in a note", InvalidInput, "note.*(surrogate|Unicode)",
           lambda a: a.s.trigger_retraining(n=1, note=SURROGATE)),
    accept("escaped lone surrogate in a model", lambda a: model_round_trip(a, {"n": SURROGATE})),
    accept("unicode model", lambda a: model_round_trip(a, {"名前": "🙂", "layer": ATTACKS[1]})),
    accept("metadata nested 60 deep", lambda a: round_trip(a, metadata=[deep_dict(60)])),
    refuse("NUL in an id", InvalidInput, "ids.*NUL", lambda a: add(a, ids=["t0\x00x"])),
    refuse("NUL in dataset", InvalidInput, "dataset.*NUL", lambda a: add(a, dataset="d\x00")),
    refuse("NUL in labels", InvalidInput, "labels.*NUL", lambda a: add(a, labels=["0\x00"])),
    refuse("NUL inside a numpy id array", InvalidInput, "ids.*NUL",
           lambda a: add(a, 2, ids=np.array(["n\x00x", "y", "z", "w"])[::2])),
    refuse("NUL in a metadata key", InvalidInput, "metadata.*NUL",
           lambda a: add(a, metadata=[{"k\x00": 1}])),
    refuse("NUL in a metadata value", InvalidInput, "metadata.*NUL",
           lambda a: add(a, metadata=[{"tag": "x\x00y"}])),
    refuse("NUL in get ids", InvalidInput, "ids.*NUL", lambda a: a.s.get(ids=["t0\x00x"])),
    refuse("NUL in delete ids", InvalidInput, "ids.*NUL", lambda a: a.s.delete(ids=["t0\x00"])),
    refuse("NUL in neighbour ids", InvalidInput, "ids.*NUL",
           lambda a: a.s.nearest_neighbors(ids=["t0\x00"])),
    refuse("NUL in a filter value", InvalidFilter, "NUL",
           lambda a: a.s.count(where={"id": {"$in": ["t0\x00"]}})),
    refuse("NUL in a metadata filter value", InvalidFilter, "NUL",
           lambda a: a.s.count(where={"tag": "x\x00"})),
    refuse("NUL in a space name", InvalidInput, "invalid space name", lambda a: a.c.space("a\x00")),
    refuse("unicode space name", InvalidInput, "invalid space name", lambda a: a.c.space("空間")),
    refuse("unicode metadata key in a filter", InvalidFilter, "invalid field name",
           lambda a: a.s.count(where={"日本": "語"})),
    # parameters
    refuse("unknown metric", InvalidInput, "unknown metric 'manhattan'",
           lambda a: a.c.space("metric_x", metric="manhattan")),
    refuse("another metric for a space", Conflict, "metric", lambda a: a.c.space(a.s.name, "ip")),
    refuse("unknown algorithm", NotFound, "unknown algorithm 'nope'", lambda a: a.s.run("nope")),
    refuse("algorithm name with a slash", NotFound, "unknown algorithm '../priority'",
           lambda a: a.s.run("../priority")),
    refuse("algorithm name with an injection", NotFound, "unknown algorithm",
           lambda a: a.s.run("priority'; DROP TABLE spaces; --")),
    refuse("unknown algorithm parameter", InvalidInput, "unknown parameter.*bogus",
           lambda a: a.s.compute_priorities(bogus=1)),
    refuse("algorithm parameter of the wrong type", InvalidInput, "k must be an integer",
           lambda a: a.s.compute_priorities(k="ten")),
    refuse("algorithm parameter nested 5,000 deep", InvalidInput, "nested",
           lambda a: a.s.compute_priorities(k=deep_dict(5000))),
    refuse("unknown strategy", InvalidInput, "unknown strategy 'random'",
           lambda a: a.s.trigger_retraining(n=1, strategy="random")),
    refuse("unknown trigger status", InvalidInput, "unknown trigger status 'gone'",
           lambda a: a.c.triggers(status="gone")),
    refuse("status of an absent trigger", NotFound, "999999",
           lambda a: a.c.set_trigger_status(999999, "done")),
    refuse("trigger id of zero", InvalidInput, "trigger_id must be at least 1",
           lambda a: a.c.set_trigger_status(0, "done")),
    refuse("trigger id below zero", InvalidInput, "trigger_id must be at least 1",
           lambda a: a.c.trigger_items(-5)),
    refuse("trigger id as text", InvalidInput, "trigger_id must be an integer",
           lambda a: a.c.set_trigger_status("abc", "done")),
    refuse("trigger id with a path", InvalidInput, "trigger_id must be an integer",
           lambda a: a.c.trigger_items("1/../2")),
    refuse("negative limit", InvalidInput, "limit must be at least 0", lambda a: a.s.get(limit=-1)),
    refuse("limit beyond 64 bits", InvalidInput, "limit must be at most",
           lambda a: a.s.get(limit=2 ** 70)),
    refuse("offset beyond 64 bits", InvalidInput, "offset must be at most",
           lambda a: a.s.get(offset=2 ** 64)),
    refuse("n beyond 64 bits", InvalidInput, "n must be at most",
           lambda a: a.s.priorities(n=2 ** 70)),
    refuse("limit as text", InvalidInput, "limit must be an integer", lambda a: a.s.get(limit="5")),
    refuse("limit as a fraction", InvalidInput, "limit must be an integer",
           lambda a: a.s.get(limit=2.5)),
    refuse("k as a bool", InvalidInput, "k must be an integer",
           lambda a: a.s.nearest_neighbors(vectors(1), k=True)),
    refuse("k of zero", InvalidInput, "k must be",
           lambda a: a.s.nearest_neighbors(vectors(1), k=0)),
    refuse("include_embeddings as text", InvalidInput, "include_embeddings must be true or false",
           lambda a: a.s.get(include_embeddings="no")),
    refuse("NaN min_priority", InvalidInput, "min_priority must be finite",
           lambda a: a.s.priorities(min_priority=float("nan"))),
    refuse("min_priority as text", InvalidInput, "min_priority must be a number",
           lambda a: a.s.priorities(min_priority="high")),
    refuse("model not a dict", InvalidInput, "model must be a dict",
           lambda a: a.c.space("model_x", model=["resnet"])),
    refuse("model with NaN", InvalidInput, "model must be JSON",
           lambda a: a.c.space("model_nan", model={"a": float("nan")})),
    refuse("model nested 5,000 deep", InvalidInput, "model.*nested",
           lambda a: a.c.space("model_deep", model=deep_dict(5000))),
    refuse("ids as a number", InvalidInput, "ids must be a list", lambda a: a.s.get(ids=5)),
    refuse("ids holding numbers", InvalidInput, "ids must be strings", lambda a: a.s.get(ids=[1])),
    refuse("ids holding None", InvalidInput, "ids must be strings",
           lambda a: a.s.delete(ids=[None])),
    refuse("ids given as one string", InvalidInput, "ids must be a sequence",
           lambda a: add(a, ids="abc")),
    refuse("dataset missing", InvalidInput, "dataset is required", lambda a: add(a, dataset=None)),
    refuse("empty dataset", InvalidInput, "dataset must not be empty",
           lambda a: add(a, dataset="")),
    refuse("empty id", InvalidInput, "ids must not be empty", lambda a: add(a, ids=[""])),
    refuse("labels for another number of rows", InvalidInput, "labels has 2 values for 1",
           lambda a: add(a, labels=[1, 2])),
    refuse("metadata not a dict", InvalidInput, "metadata of row 0 must be a dict",
           lambda a: add(a, metadata=["text"])),
    refuse("metadata of NaN", InvalidInput, "metadata of row 0 cannot be stored as JSON",
           lambda a: add(a, metadata=[{"x": float("nan")}])),
    refuse("metadata as one dict", InvalidInput, "metadata takes a list",
           lambda a: add(a, metadata={"x": 1})),
    refuse("space name with a slash", InvalidInput, "invalid space name",
           lambda a: a.c.space("a/b")),
    refuse("space name walking up", InvalidInput, "invalid space name", lambda a: a.c.space("..")),
    refuse("space name with a query string", InvalidInput, "invalid space name",
           lambda a: a.c.space("a?x=1")),
    refuse("space name with SQL", InvalidInput, "invalid space name",
           lambda a: a.c.space("x; DROP TABLE spaces")),
    refuse("count of a space with a slash", InvalidInput, "invalid space name",
           lambda a: Space(a.c, "a/b").count()),
    refuse("absent space", NotFound, "never_made", lambda a: Space(a.c, "never_made").count()),
    # where filters
    refuse("filter 17 levels deep", InvalidFilter, "deeper than 16 levels",
           lambda a: a.s.count(where=deep_filter(17))),
    refuse("filter 5,000 levels deep", InvalidFilter, "nested",
           lambda a: a.s.count(where=deep_filter(5000))),
    refuse("filter of 1,001 conditions", InvalidFilter, "more than 1000 conditions",
           lambda a: a.s.count(where={"$or": [{"label": str(i)} for i in range(1001)]})),
    refuse("unknown top operator", InvalidFilter, "unknown operator '\\$where'",
           lambda a: a.s.count(where={"$where": "1"})),
    refuse("$not is not an operator", InvalidFilter, "unknown operator '\\$not'",
           lambda a: a.s.count(where={"label": {"$not": "1"}})),
    refuse("$regex is not an operator", InvalidFilter, "unknown operator '\\$regex'",
           lambda a: a.s.get(where={"label": {"$regex": ".*"}})),
    refuse("$and of a dict", InvalidFilter, "\\$and takes a non-empty list",
           lambda a: a.s.count(where={"$and": {"label": "1"}})),
    refuse("$in of a string", InvalidFilter, "\\$in on 'label' takes a list",
           lambda a: a.s.count(where={"label": {"$in": "01"}})),
    refuse("$in holding a dict", InvalidFilter, "must be a string, number, bool or null",
           lambda a: a.s.count(where={"label": {"$in": [{"$gt": 1}]}})),
    refuse("$gt of None", InvalidFilter, "\\$gt on 'score' needs a number or string",
           lambda a: a.s.count(where={"score": {"$gt": None}})),
    refuse("$lt of a bool", InvalidFilter, "\\$lt on 'score' needs a number or string",
           lambda a: a.s.count(where={"score": {"$lt": True}})),
    refuse("list as a value", InvalidFilter, "must be a string, number, bool or null",
           lambda a: a.s.count(where={"label": [1, 2]})),
    refuse("operator dict as an operand", InvalidFilter, "must be a string, number, bool or null",
           lambda a: a.s.count(where={"label": {"$eq": {"$ne": 1}}})),
    refuse("NaN as a value", InvalidFilter, "NaN", lambda a: a.s.count(where={"score": np.nan})),
    refuse("infinity as a value", InvalidFilter, "infinite",
           lambda a: a.s.count(where={"score": {"$lt": float("inf")}})),
    refuse("infinity in $in", InvalidFilter, "infinite",
           lambda a: a.s.count(where={"score": {"$in": [1, float("-inf")]}})),
    refuse("integer beyond a double", InvalidFilter, r"beyond ±2\^53",
           lambda a: a.s.count(where={"score": 10 ** 400})),
    refuse("integer beyond 64 bits", InvalidFilter, r"beyond ±2\^53",
           lambda a: a.s.count(where={"score": {"$lt": 10 ** 30}})),
    accept("a float beyond 2^53", counts({"score": {"$lt": 1e30}}, 7)),
    accept("the integer 2^53", counts({"score": {"$lt": 2 ** 53}}, 7)),
    refuse("where of a list", InvalidFilter, "where must be a dict",
           lambda a: a.s.count(where=[{"label": "1"}])),
    refuse("where of a string", InvalidFilter, "where must be a dict",
           lambda a: a.s.count(where="label = 1")),
    refuse("number as a field name", InvalidFilter, "keys must be strings|invalid field name",
           lambda a: a.s.count(where={1: "a"})),
    refuse("field name with SQL", InvalidFilter, "invalid field name",
           lambda a: a.s.count(where={"x') OR 1=1 --": 1})),
    refuse("field name as a JSON path", InvalidFilter, "unknown operator '\\$\\.score'",
           lambda a: a.s.count(where={"$.score": 1})),
    refuse("field name ending in a newline", InvalidFilter, "invalid field name",
           lambda a: a.s.count(where={"score\n": 1})),
    refuse("space name ending in a newline", InvalidInput, "invalid space name",
           lambda a: a.c.space("name\n")),
    refuse("field name with a dot", InvalidFilter, "invalid field name",
           lambda a: a.s.count(where={"a.b": 1})),
    refuse("field name with brackets", InvalidFilter, "invalid field name",
           lambda a: a.s.count(where={"tag[0]": 1})),
    refuse("field name with a quote", InvalidFilter, "invalid field name",
           lambda a: a.s.count(where={'tag"': 1})),
    refuse("field name of a ClickHouse parameter", InvalidFilter, "invalid field name",
           lambda a: a.s.count(where={"{w0:String}": 1})),
    refuse("field name of 129 characters", InvalidFilter, "invalid field name",
           lambda a: a.s.count(where={"k" * 129: 1})),
    refuse("filter in delete", InvalidFilter, "unknown operator '\\$drop'",
           lambda a: a.s.delete(where={"$drop": []})),
    refuse("filter in neighbours", InvalidFilter, "invalid field name",
           lambda a: a.s.nearest_neighbors(vectors(1), where={"1=1": 1})),
    refuse("filter in priorities", InvalidFilter, "unknown operator",
           lambda a: a.s.priorities(where={"label": {"$exists": True}})),
    refuse("filter in a trigger", InvalidFilter, "unknown operator",
           lambda a: a.s.trigger_retraining(n=1, where={"$nor": []})),
    accept("metadata key with a dash", counts({"a-b": 3}, 1)),
    accept("boolean metadata", counts({"flag": True}, 4)),
    accept("comparisons never cross types", counts({"tag": {"$gt": 0}}, 0)),
]

# injection attempts in every string a caller can send: values match nothing, stored text
# reads back as it was sent
for attack in ATTACKS:
    CASES += [
        accept(f"catalogue value {attack!r}", counts({"label": attack}, 0)),
        accept(f"metadata value {attack!r}", counts({"tag": {"$in": [attack, "z"]}}, 0)),
        accept(f"id {attack!r}", gets([attack], [])),
        accept(
            f"stored text {attack!r}",
            lambda a, t=attack: round_trip(
                a,
                ids=[t],
                dataset=t,
                context=t,
                labels=t,
                input_uris=t,
                inferences=t,
                metadata=[{t: t}],
            ),
        ),
    ]
CASES += [
    accept("ordering against an injection", counts({"label": {"$gte": "' OR 1=1"}}, 7)),
    refuse("space name injection", InvalidInput, "invalid space name",
           lambda a: a.c.space("a'; DROP TABLE spaces; --")),
    refuse("metric injection", InvalidInput, "unknown metric",
           lambda a: a.c.space("metric_y", metric="l2'; DROP TABLE spaces; --")),
    refuse("strategy injection", InvalidInput, "unknown strategy",
           lambda a: a.s.trigger_retraining(n=1, strategy="diverse'--")),
    refuse("status injection", InvalidInput, "unknown trigger status",
           lambda a: a.c.triggers(status="pending' OR '1'='1")),
    accept(
        "note injection round-trips",
        lambda a: (
            a.s.trigger_retraining(n=1, note=ATTACKS[1]).note == ATTACKS[1] or pytest.fail("note")
        ),
    ),
]
# fmt: on


def priorities_as_seeded(a: Arena) -> None:
    assert priorities(a.s).equals(a.scored), "a case changed the stored priorities"


LAST = accept("priorities after every other case", priorities_as_seeded)


def test_the_battery_names_each_case_once():
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("mode", "store", "case"),
    [
        pytest.param(mode, store, case, id=f"{store}-{mode}-{case.name}")
        for mode, store in COMBINATIONS
        for case in [*CASES, LAST]
        if mode in case.modes
    ],
)
def test_hostile_input(arenas, mode: str, store: str, case: Case):
    arena = arenas(mode, store)
    try:
        if case.error is None:
            case.call(arena)
        else:
            with pytest.raises(case.error, match=case.match) as raised:
                case.call(arena)
            assert type(raised.value) is case.error, raised.value
        # the service answers and the seeded rows are what they were before any case
        assert_unchanged(arena.expected, snapshot(arena.s))
    except BaseException:
        # the next case starts from what this one left
        arena.expected = snapshot(arena.s)
        raise
    finally:
        arena.drop_spaces()


# --- raw HTTP: the wire protocol -----------------------------------------------------------
HEADERS = {PROTOCOL_HEADER: PROTOCOL_VERSION}
ARROW = {**HEADERS, "Content-Type": ARROW_TYPE}
JSON = {**HEADERS, "Content-Type": "application/json"}


@dataclass(frozen=True)
class Raw:
    """One request sent as bytes, and the error it must get back."""

    name: str
    #: (method, path under the seeded space or absolute, headers, body)
    request: Callable[[], tuple[str, str, dict, bytes | None]]
    status: int
    error: str
    match: str
    #: the stores to send it to: the rest of the cases are refused before a store is asked
    stores: tuple[str, ...] = ("sqlite",)


def arrow_rows(**columns) -> dict:
    base = {
        "id": pa.array(["raw0", "raw1"]),
        "dataset": pa.array(["d", "d"]),
        "context": pa.array(["training", "training"]),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors(2).ravel()), DIM),
    }
    for name, value in columns.items():
        if value is None:
            base.pop(name)
        else:
            base[name] = value
    return base


def arrow_body(params: dict | None = None, **columns) -> bytes:
    return encode_arrow(params or {}, pa.table(arrow_rows(**columns)))


def rows_post(body: bytes, headers: dict = ARROW):
    return lambda: ("POST", "rows", headers, body)


def with_params_bytes(raw: bytes) -> bytes:
    """An Arrow stream whose parameters are the given bytes, not JSON of a dict."""
    table = pa.table(arrow_rows()).replace_schema_metadata({PARAMS_KEY: raw})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def metadata_rows(*texts: str) -> bytes:
    return arrow_body(metadata=pa.array([*texts, None][:2], pa.string()))


def invalid_utf8(column: str) -> bytes:
    """A string column whose second value is not UTF-8 (Arrow does not check on read)."""
    values = pa.array([b"ok", b"\xff\xfe"], pa.binary())
    text = pa.Array.from_buffers(pa.string(), 2, values.buffers())
    return arrow_body(**{column: text})


def json_post(path: str, body: bytes):
    return lambda: ("POST", path, JSON, body)


def nested_json(depth: int) -> bytes:
    return b'{"where": ' + b'{"$and": [' * depth + b'{"label": "0"}' + b"]}" * depth + b"}"


def queries_body(params: dict, **columns) -> bytes:
    return encode_arrow(params, pa.table(columns))


def compressed_past_the_limit() -> bytes:
    """Two rows and a column of zeros, zstd-compressed: some kilobytes that hold four times
    the server's body limit once decompressed."""
    table = pa.table({"zeros": pa.array(np.zeros(MAX_BODY, np.float32))})
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    body = sink.getvalue().to_pybytes()
    assert len(body) < MAX_BODY // 100
    return body


def offsets_past_values() -> bytes:
    """Rows whose embedding list column has offsets pointing past its values: a good
    stream with the offsets' bytes changed, which no Arrow writer would produce."""
    embedding = pa.array([list(v) for v in vectors(2)], pa.list_(pa.float32()))
    # ids of other lengths than the vectors, so only the embedding has these offsets
    body = arrow_body(embedding=embedding, id=pa.array(["r0", "raw-long-id"]))
    good = struct.pack("<3i", 0, DIM, 2 * DIM)
    assert body.count(good) == 1
    return body.replace(good, struct.pack("<3i", 0, DIM, 50 * DIM))


GOOD = arrow_body()
BOTH = tuple(STORES)
# fmt: off
RAW: list[Raw] = [
    Raw("not Arrow", rows_post(b"not arrow at all"), 400, "MalformedPayload", "Arrow", stores=BOTH),
    Raw("truncated Arrow", rows_post(GOOD[:len(GOOD) // 2]), 400, "MalformedPayload", "Arrow"),
    Raw("Arrow cut in its last bytes", rows_post(GOOD[:-9]), 400, "MalformedPayload", "Arrow"),
    Raw("empty Arrow body", rows_post(b""), 400, "MalformedPayload", "Arrow"),
    Raw("Arrow schema and no batch", rows_post(GOOD[:GOOD.index(b"\xff\xff\xff\xff", 8)]), 400,
        "InvalidInput", "the batch is empty"),
    Raw("JSON where Arrow is expected", rows_post(b"{}", JSON), 400, "InvalidInput",
        "add needs the rows as an Arrow table"),
    Raw("parameters that are not JSON", rows_post(with_params_bytes(b"{oops")), 400,
        "MalformedPayload", "not valid JSON"),
    Raw("parameters that are a list", rows_post(with_params_bytes(b"[1]")), 400, "MalformedPayload",
        "must be an object"),
    Raw("unknown parameter in Arrow", rows_post(arrow_body({"sneaky": 1})), 400, "InvalidInput",
        "unknown parameter.*sneaky"),
    Raw("no rows", rows_post(encode_arrow({}, pa.table(arrow_rows()).slice(0, 0))), 400,
        "InvalidInput", "the batch is empty"),
    Raw("no id column", rows_post(arrow_body(id=None, dataset=None)), 400, "InvalidInput",
        "lacks column.*dataset"),
    Raw("no embedding column", rows_post(arrow_body(embedding=None)), 400, "InvalidInput",
        "lacks column.*embedding"),
    Raw("unknown column", rows_post(arrow_body(secret=pa.array([1, 2]))), 400, "InvalidInput",
        "unknown column.*secret"),
    Raw("embedding as text", rows_post(arrow_body(embedding=pa.array(["1,2", "3,4"]))), 400,
        "InvalidInput", "embedding must be a list"),
    Raw("embedding of strings", rows_post(arrow_body(embedding=pa.array([["a"] * 4, ["b"] * 4]))),
        400, "InvalidInput", "embedding values must be numbers"),
    Raw(
        "null embedding",
        rows_post(arrow_body(embedding=pa.array([[1.0] * 4, None], pa.list_(pa.float32())))),
        400,
        "InvalidInput",
        "embedding is missing",
    ),
    Raw(
        "null inside an embedding",
        rows_post(arrow_body(embedding=pa.array([[1.0] * 4, [1.0, None, 1.0, 1.0]]))),
        400,
        "InvalidInput",
        "embedding values contain nulls",
    ),
    Raw("NaN embedding", rows_post(arrow_body(embedding=pa.array([[1.0] * 4, [np.nan] * 4]))), 400,
        "InvalidInput", "NaN"),
    Raw("mixed dimensions", rows_post(arrow_body(embedding=pa.array([[1.0] * 4, [1.0] * 3]))), 400,
        "DimensionMismatch", "mixed dimensions"),
    Raw("wrong dimension", rows_post(arrow_body(embedding=pa.array([[1.0] * 5, [1.0] * 5]))), 400,
        "DimensionMismatch", "dimension 5", stores=BOTH),
    Raw("id as numbers", rows_post(arrow_body(id=pa.array([1, 2]))), 400, "InvalidInput",
        "id must be text"),
    Raw("dataset as bytes", rows_post(arrow_body(dataset=pa.array([b"d", b"d"]))), 400,
        "InvalidInput", "dataset must be text"),
    Raw("null id", rows_post(arrow_body(id=pa.array(["a", None]))), 400, "InvalidInput",
        "id is missing"),
    Raw("empty id", rows_post(arrow_body(id=pa.array(["a", ""]))), 400, "InvalidInput",
        "id must not be empty"),
    Raw("duplicate ids", rows_post(arrow_body(id=pa.array(["same", "same"]))), 400, "InvalidInput",
        "duplicate id in the batch: 'same'"),
    Raw("stored id", rows_post(arrow_body(id=pa.array(["new", "t2"]))), 409, "Conflict", "'t2'",
        stores=BOTH),
    Raw("id over 512 characters", rows_post(arrow_body(id=pa.array(["a", "b" * 513]))), 400,
        "InvalidInput", "id is longer than 512"),
    Raw("id not UTF-8", rows_post(invalid_utf8("id")), 400, "InvalidInput", "id.*UTF-8"),
    Raw("label not UTF-8", rows_post(invalid_utf8("label")), 400, "InvalidInput", "label.*UTF-8"),
    Raw("metadata not UTF-8", rows_post(invalid_utf8("metadata")), 400, "InvalidInput",
        "metadata.*UTF-8", stores=BOTH),
    Raw("NUL in an id", rows_post(arrow_body(id=pa.array(["a", "t1\x00"]))), 400, "InvalidInput",
        "id.*NUL", stores=BOTH),
    Raw("NUL in context", rows_post(arrow_body(context=pa.array(["a", "b\x00"]))), 400,
        "InvalidInput", "context.*NUL"),
    Raw("metadata not JSON", rows_post(metadata_rows("{oops")), 400, "InvalidInput",
        "metadata of row 0 is not valid JSON"),
    Raw("metadata a JSON list", rows_post(metadata_rows("[1, 2]")), 400, "InvalidInput",
        "metadata of row 0 must be a JSON object"),
    Raw("metadata with NaN", rows_post(metadata_rows('{"a": NaN}')), 400, "InvalidInput",
        "metadata of row 0.*NaN", stores=BOTH),
    Raw("metadata with Infinity", rows_post(metadata_rows('{"a": [-Infinity]}')), 400,
        "InvalidInput", "metadata of row 0.*Infinity"),
    Raw("metadata with a key twice", rows_post(metadata_rows('{"a": 1, "a": 2}')), 400,
        "InvalidInput", "metadata of row 0.*'a' twice", stores=BOTH),
    Raw("metadata with an escaped NUL", rows_post(metadata_rows('{"a": "x\\u0000"}')), 400,
        "InvalidInput", "metadata must not contain NUL"),
    Raw(
        "metadata nested 30,000 deep",
        rows_post(metadata_rows('{"a": ' + "[" * 30_000 + "]" * 30_000 + "}")),
        400,
        "InvalidInput",
        "metadata of row 0.*nested",
    ),
    Raw("metadata with trailing text", rows_post(metadata_rows('{"a": 1} {"b": 2}')), 400,
        "InvalidInput", "metadata of row 0 is not valid JSON"),
    Raw("output as text", rows_post(arrow_body(output=pa.array(["0.5", "0.5"]))), 400,
        "InvalidInput", "output must be a list"),
    Raw("output of strings", rows_post(arrow_body(output=pa.array([["a"], ["b"]]))), 400,
        "InvalidInput", "output values must be numbers"),
    Raw("output with NaN", rows_post(arrow_body(output=pa.array([[0.5], [np.nan]]))), 400,
        "InvalidInput", "output contains NaN"),
    Raw("body over the limit", rows_post(b"\x00" * (MAX_BODY + 1)), 413, "PayloadTooLarge", "limit",
        stores=BOTH),
    Raw(
        "declared length over the limit",
        lambda: ("POST", "rows", {**ARROW, "Content-Length": str(MAX_BODY + 1)}, b"x" * 100),
        413,
        "PayloadTooLarge",
        "limit",
    ),
    Raw(
        "streamed body over the limit",
        lambda: ("POST", "rows", ARROW, iter([b"\0" * (1 << 20)] * 9)),
        413,
        "PayloadTooLarge",
        "limit",
    ),
    Raw("zstd Arrow expanding past the body limit", rows_post(compressed_past_the_limit()), 413,
        "PayloadTooLarge", "once decompressed.*CHROMA_MAX_BODY_BYTES", stores=BOTH),
    Raw("metadata integer beyond 2^53", rows_post(metadata_rows('{"n": 9007199254740993}')),
        400, "InvalidInput", r"row 0 holds the integer 9007199254740993, beyond ±2\^53",
        stores=BOTH),
    Raw("metadata integer beyond 2^64",
        rows_post(metadata_rows('{"a": [1, {"n": -123456789012345678901234567890}]}')), 400,
        "InvalidInput", "row 0 holds the integer -123456789012345678901234567890", stores=BOTH),
    Raw("filter integer beyond 2^53", json_post("count", b'{"where": {"n": 9007199254740993}}'),
        400, "InvalidFilter", r"9007199254740993 for 'n' is beyond ±2\^53", stores=BOTH),
    Raw("filter integer beyond 2^64 in a list",
        json_post("count", b'{"where": {"n": {"$in": [1, 18446744073709551617]}}}'), 400,
        "InvalidFilter", "18446744073709551617", stores=BOTH),
    Raw("JSON that is not JSON", json_post("count", b"{oops"), 400, "MalformedPayload",
        "not valid JSON"),
    Raw("JSON not UTF-8", json_post("count", b'{"where": "\xff"}'), 400, "MalformedPayload",
        "not valid JSON"),
    Raw("JSON of a list", json_post("count", b"[]"), 400, "MalformedPayload", "must be an object"),
    Raw("Arrow list offsets past their values", rows_post(offsets_past_values()), 400,
        "MalformedPayload", "Arrow", stores=BOTH),
    Raw("ids sent as a JSON object", json_post("get", b'{"ids": {"a": 1}}'), 400, "InvalidInput",
        "ids must be a list of strings, got an object", stores=BOTH),
    Raw("JSON nested 100,000 deep", json_post("count", nested_json(100000)), 400,
        "MalformedPayload", "nested"),
    Raw("filter nested 200 deep", json_post("count", nested_json(200)), 400, "InvalidFilter",
        "nested"),
    Raw("unknown JSON parameter", json_post("count", b'{"sneaky": 1}'), 400, "InvalidInput",
        "unknown parameter.*sneaky"),
    Raw("NaN in JSON", json_post("priorities", b'{"min_priority": NaN}'), 400, "InvalidInput",
        "min_priority must be finite"),
    Raw("Infinity in a JSON filter", json_post("count", b'{"where": {"score": Infinity}}'), 400,
        "InvalidFilter", "infinite", stores=BOTH),
    Raw("huge integer in JSON", json_post("get", b'{"limit": 1' + b"0" * 400 + b"}"), 400,
        "InvalidInput", "limit must be at most"),
    Raw("escaped lone surrogate in JSON ids", json_post("get", b'{"ids": ["\\ud800"]}'), 400,
        "InvalidInput", "ids.*(surrogate|Unicode)"),
    Raw("escaped NUL in a JSON filter", json_post("count", b'{"where": {"label": "\\u0000"}}'), 400,
        "InvalidFilter", "NUL", stores=BOTH),
    Raw("limit as a JSON string", json_post("get", b'{"limit": "5"}'), 400, "InvalidInput",
        "limit must be an integer"),
    Raw("include_embeddings as a JSON string", json_post("get", b'{"include_embeddings": "no"}'),
        400, "InvalidInput", "include_embeddings must be true or false"),
    Raw("space in the body and the path", json_post("count", b'{"space": "other"}'), 200, "", "",
        stores=BOTH),
    Raw("unknown query parameter", lambda: ("GET", "status?bogus=1", HEADERS, None), 400,
        "InvalidInput", "unknown parameter.*bogus"),
    Raw("rows added through JSON", json_post("rows", b'{"embeddings": [[1, 2, 3, 4]]}'), 400,
        "InvalidInput", "unknown parameter.*embeddings"),
    Raw(
        "queries and ids at once",
        lambda: (
            "POST",
            "nearest_neighbors",
            ARROW,
            queries_body({"ids": ["t0"]}, embedding=pa.array([[1.0] * 4])),
        ),
        400,
        "InvalidInput",
        "either queries or ids",
    ),
    Raw(
        "more neighbours than a call returns",
        lambda: (
            "POST",
            "nearest_neighbors",
            ARROW,
            queries_body(
                {"k": 10_000},
                embedding=pa.FixedSizeListArray.from_arrays(pa.array(np.ones(404, np.float32)), 4),
            ),
        ),
        400,
        "InvalidInput",
        r"asks for 1,010,000 neighbours \(101 queries x k=10000\), more than the 1,000,000",
        stores=BOTH,
    ),
    Raw(
        "queries without an embedding column",
        lambda: ("POST", "nearest_neighbors", ARROW, queries_body({}, vector=pa.array([1]))),
        400,
        "InvalidInput",
        "needs an 'embedding' column",
    ),
    Raw(
        "queries of text",
        lambda: ("POST", "nearest_neighbors", ARROW, queries_body({}, embedding=pa.array(["a"]))),
        400,
        "InvalidInput",
        "embedding must be a list",
    ),
    Raw(
        "queries with NaN",
        lambda: (
            "POST",
            "nearest_neighbors",
            ARROW,
            queries_body({}, embedding=pa.array([[np.nan] * 4])),
        ),
        400,
        "InvalidInput",
        "NaN",
    ),
    Raw(
        "other protocol version",
        lambda: (
            "POST",
            "count",
            {"Content-Type": "application/json", PROTOCOL_HEADER: "0"},
            b"{}",
        ),
        426,
        "ProtocolMismatch",
        "protocol 0",
    ),
    Raw("unknown route", lambda: ("GET", "/api/v1/drop_everything", HEADERS, None), 404, "NotFound",
        "/api/v1/drop_everything", stores=BOTH),
    Raw("unknown operation on a space", json_post("truncate", b"{}"), 404, "NotFound", "truncate"),
    Raw("wrong method", lambda: ("PUT", "count", JSON, b"{}"), 405, "MethodNotAllowed", "PUT"),
    Raw("unknown algorithm in the path", json_post("run/nope", b"{}"), 404, "NotFound",
        "unknown algorithm 'nope'", stores=BOTH),
    Raw("algorithm path walking up", json_post("run/..%2F..%2Fspaces", b"{}"), 404, "NotFound",
        "unknown algorithm '../../spaces'"),
    Raw("trigger id of text", lambda: ("GET", "/api/v1/triggers/abc/items", HEADERS, None), 400,
        "InvalidInput", "trigger_id must be an integer"),
    Raw(
        "space name with SQL in the path",
        lambda: ("POST", "/api/v1/spaces/x%27%3B%20DROP%20TABLE%20spaces/count", JSON, b"{}"),
        400,
        "InvalidInput",
        "invalid space name",
    ),
    Raw(
        "shared-memory name walking up",
        lambda: ("POST", "rows", {**ARROW, SHM_HEADER: "../../etc/passwd"}, b""),
        400,
        "MalformedPayload",
        "name",
    ),
    Raw(
        "shared-memory name of the proof",
        lambda: ("POST", "rows", {**ARROW, SHM_HEADER: "chroma-proof-x"}, b""),
        400,
        "MalformedPayload",
        "name|proof",
    ),
]
# fmt: on


def send_as_declared(url: str, method: str, headers: dict, body: bytes):
    """Send ``headers`` as they are, Content-Length included, whatever the body's length
    (httpx would refuse a length that is not the body's)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.putrequest(method, parts.path)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.headers, response.read().decode()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def raw_arenas(limited_servers):
    """A seeded space on the server of a store, made when first asked for."""
    made: dict[str, tuple[Server, Space]] = {}

    def get(store: str) -> tuple[Server, Space]:
        if store not in made:
            server = limited_servers(store)
            space = Client(server.url).space(f"raw_{uuid.uuid4().hex[:8]}")
            seed(space)
            made[store] = server, space
        return made[store]

    yield get
    for _, space in made.values():
        space.client.close()


def test_the_protocol_battery_names_each_case_once():
    names = [case.name for case in RAW]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("store", "case"),
    [
        pytest.param(store, case, id=f"{store}-{case.name}")
        for store in STORES
        for case in RAW
        if store in case.stores
    ],
)
def test_hostile_request(raw_arenas, store: str, case: Raw):
    server, space = raw_arenas(store)
    before = snapshot(space)
    method, path, headers, body = case.request()
    url = server.url + (path if path.startswith("/") else f"/api/v1/spaces/{space.name}/{path}")
    if "Content-Length" in headers:
        status, reply_headers, text = send_as_declared(url, method, headers, body)
    else:
        response = httpx.request(method, url, headers=headers, content=body, timeout=60)
        status, reply_headers, text = response.status_code, response.headers, response.text
    assert status == case.status, text[:500]
    if case.error:
        reply = json.loads(text)
        assert reply["error"] == case.error, reply
        assert re.search(case.match, reply["detail"]), reply["detail"]
        assert reply_headers.get(PROTOCOL_HEADER) == PROTOCOL_VERSION
    assert httpx.get(f"{server.url}/healthz").json() == {"ok": True}
    assert_unchanged(before, snapshot(space))


def test_a_full_disk_is_named_and_nothing_partial_is_stored(tmp_path, monkeypatch):
    """SQLite's page limit stands for a full disk: the same SQLITE_FULL error. The add
    that does not fit is a StorageFull naming it, stores nothing, and writes resume once
    there is room."""
    from chroma_client.errors import StorageFull

    for key in [k for k in os.environ if k.startswith("CHROMA_")]:
        monkeypatch.delenv(key)
    client = Client(path=tmp_path / "data")
    space = client.space("full")
    space.add(vectors(10), dataset="d", ids=[f"a{i}" for i in range(10)])
    conn = client._transport.chroma.store._conn()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 2}")
    big = np.random.default_rng(0).normal(size=(20_000, DIM)).astype(np.float32)
    with pytest.raises(StorageFull, match="disk is full"):
        space.add(big, dataset="d", ids=[f"b{i}" for i in range(20_000)])
    assert space.count() == 10
    conn.execute("PRAGMA max_page_count = 1073741823")
    space.add(big[:100], dataset="d", ids=[f"b{i}" for i in range(100)])
    assert space.count() == 110
    client.close()
