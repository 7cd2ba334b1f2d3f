"""The store conformance suite: what every store plugin must do, whatever holds the data.

:class:`StoreConformance` holds every test; a store package runs them against its own store
by subclassing it in its tests folder (see :mod:`chroma_core.testing`). Stores are reached
only as the service reaches them, through the ``chroma_open_store`` hook, and used only
through :class:`~chroma_core.store.Store` and the optional capabilities of
:mod:`chroma_core.store`; the tests of a capability the store lacks are skipped, naming it.

Every argument a test hands a store is one the service could have handed it: a batch passed
:func:`~chroma_core.schema.validate_rows`, a filter passed :func:`~chroma_core.filters.parse`
(the service validates; a store checks only what needs its own lock).
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from chroma_core.config import Settings
from chroma_core.distance import exact_knn
from chroma_core.filters import parse
from chroma_core.plugins import open_store
from chroma_core.schema import embeddings_of, validate_rows
from chroma_core.store import (
    AddPriorities,
    BatchAlreadyStored,
    Capability,
    FollowRows,
    NeighborSearch,
    PagedBackup,
    ReplaceRows,
    Restore,
    SpaceSettings,
    Store,
)
from chroma_wire.errors import Conflict, DimensionMismatch, NotFound
from chroma_wire.types import CATALOGUE_COLUMNS, TRIGGER_STATUSES, SpaceInfo

DIM = 4
PRIORITY_COLUMNS = ["id", "priority", "components", "computed_at"]
PRIORITY_CATALOGUE = ["dataset", "context", "input_uri", "inference", "label"]
ITEM_COLUMNS = ["id", "input_uri", "dataset", "label", "inference", "priority"]
TRIGGER_KEYS = {
    "id", "space", "status", "note", "selection", "count", "created_at", "updated_at",
    "deliveries",
}  # fmt: skip


def require(store: Store, power: type[Capability]) -> None:
    """Skip the running test unless ``store`` has the optional capability ``power``."""
    if not isinstance(store, power):
        pytest.skip(
            f"the {store.name!r} store lacks the optional capability {power.__name__} "
            f"(it cannot {power.ability})"
        )


def batch(
    ids,
    dim: int = DIM,
    *,
    dataset="cifar10",
    context="training",
    input_uri=None,
    inference=None,
    label=None,
    metadata=None,
    outputs=None,
) -> pa.Table:
    """A validated batch; a list gives one value per row, anything else one value for all."""
    n = len(ids)

    def per_row(value) -> list:
        return list(value) if isinstance(value, list) else [value] * n

    rng = np.random.default_rng(zlib.crc32("\0".join(ids).encode()))
    embeddings = rng.standard_normal((n, dim)).astype(np.float32)
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "dataset": pa.array(per_row(dataset), pa.string()),
            "context": pa.array(per_row(context), pa.string()),
            "input_uri": pa.array(per_row(input_uri), pa.string()),
            "inference": pa.array(per_row(inference), pa.string()),
            "label": pa.array(per_row(label), pa.string()),
            "metadata": pa.array(
                [None if m is None else json.dumps(m) for m in per_row(metadata)], pa.string()
            ),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)), dim),
            "output": pa.array(per_row(outputs), pa.list_(pa.float32())),
        }
    )
    # the service validates every batch before the store sees it
    return validate_rows(table, None)


def ids_of(table: pa.Table) -> list[str]:
    return table.column("id").to_pylist()


def seqs_of(table: pa.Table) -> list[int]:
    return table.column("seq").to_pylist()


def seqs_of_added(seqs) -> list[int]:
    return [int(s) for s in seqs]


def scores(priorities: dict[str, float]) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(list(priorities), pa.string()),
            "priority": pa.array(list(priorities.values()), pa.float64()),
            "components": pa.array(
                [json.dumps({"uncertainty": p}) for p in priorities.values()], pa.string()
            ),
            "computed_at": pa.array(["2024-05-01T12:00:00+00:00"] * len(priorities)),
        }
    )


def items(priorities: dict[str, float]) -> pa.Table:
    n = len(priorities)
    return pa.table(
        {
            "id": pa.array(list(priorities), pa.string()),
            "input_uri": pa.array([f"s3://bucket/{i}.png" for i in priorities], pa.string()),
            "dataset": pa.array(["cifar10"] * n, pa.string()),
            "label": pa.array([None] * n, pa.string()),
            "inference": pa.array(["cat"] * n, pa.string()),
            "priority": pa.array(list(priorities.values()), pa.float64()),
        }
    )


CALLS_ON_SPACE = {
    "get_space": lambda s: s.get_space("nowhere"),
    "delete_space": lambda s: s.delete_space("nowhere"),
    "add": lambda s: s.add("nowhere", batch(["a"])),
    "get": lambda s: s.get("nowhere"),
    "count": lambda s: s.count("nowhere"),
    "delete": lambda s: s.delete("nowhere", ids=["a"]),
    "vectors": lambda s: s.vectors("nowhere"),
    "rows_by_seq": lambda s: s.rows_by_seq("nowhere", np.array([1])),
    "max_seq": lambda s: s.max_seq("nowhere"),
    "replace_priorities": lambda s: s.replace_priorities("nowhere", scores({"a": 1.0})),
    "priorities": lambda s: s.priorities("nowhere"),
    "create_trigger": lambda s: s.create_trigger("nowhere", items({"a": 1.0}), None, {}),
    "list_triggers": lambda s: s.list_triggers(space="nowhere"),
}


# --- where --------------------------------------------------------------------------
FILTER_ROWS = {
    # id: dataset, context, label, inference, input_uri, metadata
    "a": ("cifar10", "training", "cat", "cat", "s3://a.png",
          {"confidence": 0.9, "n": 3, "tag": "x", "ok": True, "blank": None, "my-key": 1,
           "big": 2**53}),
    "b": ("cifar10", "production", None, "dog", None,
          {"confidence": 0.2, "n": 10, "tag": "y", "ok": False, "big": -(2**53)}),
    "c": ("mnist", "production", "3", "3", None,
          {"confidence": 0.5, "n": -1.5, "tag": "x' OR 1=1 --", "ok": True, "big": 2**53 - 1}),
    "d": ("mnist", "validation", "7", "1", None, None),
    "e": ("mnist", "production", None, None, None,
          {"confidence": "high", "n": 3.0, "tag": "3", "big": 1e300}),
}  # fmt: skip

FILTER_CASES = [
    # catalogue fields
    ({"dataset": "cifar10"}, "ab"),
    ({"dataset": {"$eq": "mnist"}}, "cde"),
    ({"dataset": {"$ne": "mnist"}}, "ab"),
    ({"label": None}, "be"),
    ({"label": {"$eq": None}}, "be"),
    ({"label": {"$ne": None}}, "acd"),
    ({"label": {"$ne": "cat"}}, "bcde"),
    ({"label": 3}, "c"),
    ({"label": {"$in": ["cat", "7"]}}, "ad"),
    ({"label": {"$in": ["cat", None]}}, "abe"),
    ({"label": {"$in": []}}, ""),
    ({"label": {"$nin": ["cat"]}}, "bcde"),
    ({"label": {"$nin": ["cat", None]}}, "cd"),
    ({"label": {"$nin": []}}, "abcde"),
    ({"id": {"$gt": "b"}}, "cde"),
    ({"id": {"$gte": "b"}}, "bcde"),
    ({"id": {"$lt": "c"}}, "ab"),
    ({"id": {"$lte": "c"}}, "abc"),
    ({"inference": {"$gte": "1", "$lt": "4"}}, "cd"),
    ({"input_uri": {"$ne": None}}, "a"),
    ({"id": {"$in": [f"x{i}" for i in range(5000)] + ["d"]}}, "d"),
    # metadata numbers
    ({"confidence": 0.9}, "a"),
    ({"confidence": {"$gt": 0.5}}, "a"),
    ({"confidence": {"$gte": 0.5}}, "ac"),
    ({"confidence": {"$lt": 0.5}}, "b"),
    ({"confidence": {"$lte": 0.5}}, "bc"),
    ({"confidence": {"$gt": 0.1, "$lt": 0.6}}, "bc"),
    ({"confidence": {"$ne": 0.9}}, "bcde"),
    ({"n": 3}, "ae"),
    ({"n": {"$lt": 0}}, "c"),
    ({"n": {"$in": [3, 10]}}, "abe"),
    ({"n": {"$nin": [3, 10]}}, "cd"),
    ({"n": {"$in": list(range(-2000, 2000))}}, "abe"),
    # integers up to ±2^53, the largest metadata may hold, compare exactly on every store
    ({"big": 2**53}, "a"),
    ({"big": -(2**53)}, "b"),
    ({"big": {"$gt": 2**53 - 1}}, "ae"),
    ({"big": {"$gte": 2**53 - 1}}, "ace"),
    ({"big": {"$lt": 2**53}}, "bc"),
    ({"big": {"$lt": 0}}, "b"),
    ({"big": {"$in": [2**53 - 1, 2**53]}}, "ac"),
    ({"big": {"$nin": [2**53 - 1, 2**53]}}, "bde"),
    ({"big": 9007199254740991.0}, "c"),
    # metadata strings, and values of the other type never matching
    ({"confidence": "high"}, "e"),
    ({"confidence": {"$lt": "z"}}, "e"),
    ({"tag": "x"}, "a"),
    ({"tag": {"$gt": "x"}}, "bc"),
    ({"tag": {"$lt": "a"}}, "e"),
    ({"tag": 3}, ""),
    ({"tag": {"$nin": ["x"]}}, "bcde"),
    ({"tag": {"$in": ["x", "y"]}}, "ab"),
    ({"my-key": 1}, "a"),
    # metadata booleans and nulls; a missing key is null
    ({"ok": True}, "ac"),
    ({"ok": False}, "b"),
    ({"ok": {"$ne": True}}, "bde"),
    ({"ok": {"$in": [False]}}, "b"),
    ({"ok": None}, "de"),
    ({"ok": {"$ne": None}}, "abc"),
    ({"blank": None}, "abcde"),
    ({"blank": {"$ne": None}}, ""),
    ({"missing": {"$ne": 1}}, "abcde"),
    ({"missing": {"$gt": 0}}, ""),
    # values that look like SQL are only values
    ({"tag": "x' OR 1=1 --"}, "c"),
    ({"dataset": "x' OR 1=1 --"}, ""),
    ({"label": {"$in": ["') OR 1=1 --", '") OR 1=1 --']}}, ""),
    ({"tag": {"$gt": "'; DROP TABLE rows; --"}}, "abce"),
    ({"ok": {"$nin": ["1) OR (1=1"]}}, "abcde"),
    # nesting
    ({"dataset": "mnist", "ok": True}, "c"),
    ({"$and": [{"dataset": "mnist"}, {"context": "production"}]}, "ce"),
    ({"$or": [{"label": "cat"}, {"n": {"$lt": 0}}]}, "ac"),
    (
        {
            "$or": [
                {"$and": [{"dataset": "cifar10"}, {"ok": False}]},
                {"$and": [{"dataset": "mnist"}, {"label": None}]},
            ]
        },
        "be",
    ),
    (
        {"$and": [{"$or": [{"label": "7"}, {"label": "3"}]}, {"context": {"$ne": "validation"}}]},
        "c",
    ),
]


# --- back-up and restore --------------------------------------------------------------
# each call with the capability it belongs to
RESTORE_CALLS = {
    "rows_page": (PagedBackup, lambda s: s.rows_page("nowhere", after_seq=0, limit=10)),
    "priorities_page": (
        PagedBackup,
        lambda s: s.priorities_page("nowhere", after_id=None, limit=10),
    ),
    "restore_rows": (Restore, lambda s: s.restore_rows("nowhere", batch(["a"]), np.array([1]))),
    "restore_priorities": (
        Restore,
        lambda s: s.restore_priorities("nowhere", scores({"a": 1.0})),
    ),
    "restore_trigger": (
        Restore,
        lambda s: s.restore_trigger("nowhere", restored_trigger(1), items({})),
    ),
}


def restored_trigger(trigger_id: int, **changes) -> dict:
    return {
        "id": trigger_id,
        "status": "acknowledged",
        "note": "weekly relabel",
        "selection": {"strategy": "diverse", "n": 2, "duplicates": [{"id": "c", "of": "b"}]},
        "created_at": "2024-05-01T12:00:00.000+00:00",
        "updated_at": "2024-05-02T08:30:00.000+00:00",
        "deliveries": {"manifest": {"ok": True, "rows": 2}, "webhook": {"ok": False}},
    } | changes


class StoreConformance:
    """Every test of the store contract, run against the store ``store_name`` names.

    Subclass it in a store package's tests as ``Test...`` with ``store_name`` set (or left
    None for ``pytest --chroma-store NAME`` to name it), and override
    :meth:`store_environment` when the store needs settings of its own.
    """

    #: the name ``CHROMA_STORE`` selects; None takes the one ``--chroma-store`` gives
    store_name: str | None = None

    def store_environment(self, path: Path) -> dict[str, str]:
        """``CHROMA_*`` variables, besides ``CHROMA_STORE``, for a store whose data lives
        under ``path``, a directory of its own for each test (``CHROMA_PATH`` is ``path``):
        e.g. a server's address and a database named after ``path``."""
        return {}

    # --- fixtures -------------------------------------------------------------------
    @pytest.fixture(scope="class")
    @classmethod
    def chroma_store_name(cls, request) -> str:
        """The name of the store under test."""
        name = cls.store_name or request.config.getoption("chroma_store")
        if not name:
            pytest.skip("no store to test: set store_name on the class or pass --chroma-store")
        return name

    @pytest.fixture(scope="class")
    @classmethod
    def open_chroma_store(cls, chroma_store_name) -> Callable[[Path], Store]:
        """Open the store under test on a data directory, as a service started there with
        ``CHROMA_STORE`` and :meth:`store_environment` would open it."""
        suite = cls()

        def open_(path: Path) -> Store:
            environment = {"CHROMA_STORE": chroma_store_name, **suite.store_environment(path)}
            store = open_store(Settings.from_env(environment, path=path))
            assert isinstance(store, Store), f"the {chroma_store_name!r} store is no Store"
            return store

        return open_

    @pytest.fixture
    def reopen(self, open_chroma_store, tmp_path):
        """Open the store under test on this test's data directory; call again to reopen
        it."""
        opened: list[Store] = []

        def reopen_() -> Store:
            opened.append(open_chroma_store(tmp_path))
            return opened[-1]

        yield reopen_
        for store in opened:
            store.close()

    @pytest.fixture
    def store(self, reopen) -> Store:
        return reopen()

    @pytest.fixture
    def space(self, store) -> str:
        store.create_space("space", "cosine", {"name": "resnet18"})
        return "space"

    @pytest.fixture(scope="class")
    @classmethod
    def filter_store(cls, open_chroma_store, tmp_path_factory):
        """One store holding :data:`FILTER_ROWS`, scored, for every filter case."""
        store = open_chroma_store(tmp_path_factory.mktemp("filters"))
        store.create_space("space", "l2", {})
        columns = list(zip(*FILTER_ROWS.values(), strict=True))
        store.add(
            "space",
            batch(
                list(FILTER_ROWS),
                dataset=list(columns[0]),
                context=list(columns[1]),
                label=list(columns[2]),
                inference=list(columns[3]),
                input_uri=list(columns[4]),
                metadata=list(columns[5]),
            ),
        )
        store.replace_priorities("space", scores(dict.fromkeys(FILTER_ROWS, 1.0)))
        yield store
        store.close()

    # --- spaces -----------------------------------------------------------------------
    def test_store_is_the_one_asked_for(self, store, chroma_store_name):
        assert store.name == chroma_store_name

    def test_create_get_list_and_delete_spaces(self, store):
        info = store.create_space("beta", "cosine", {"name": "resnet18", "layer": "avgpool"})
        model = {"name": "resnet18", "layer": "avgpool"}
        assert info == SpaceInfo("beta", "cosine", None, 0, model, info.created_at, info.space_id)
        assert info.created_at
        assert info.space_id > 0
        store.create_space("alpha", "l2", {})
        store.create_space("gamma", "ip", {})

        assert store.get_space("beta") == info
        assert [s.name for s in store.list_spaces()] == ["alpha", "beta", "gamma"]
        assert [s.metric for s in store.list_spaces()] == ["l2", "cosine", "ip"]

        store.delete_space("beta")
        with pytest.raises(NotFound, match="beta"):
            store.get_space("beta")
        assert [s.name for s in store.list_spaces()] == ["alpha", "gamma"]

    def test_space_info_counts_rows(self, store, space):
        store.add(space, batch(["a", "b", "c"]))
        info = store.get_space(space)
        assert (info.count, info.dim) == (3, DIM)
        assert [s.count for s in store.list_spaces()] == [3]
        # asked not to count, no store counts, and every store says so the same way
        uncounted = store.get_space(space, count=False)
        assert uncounted == SpaceInfo(
            space, "cosine", DIM, None, info.model, info.created_at, info.space_id
        )

    def test_creating_an_existing_space_conflicts(self, store, space):
        with pytest.raises(Conflict, match=space):
            store.create_space(space, "l2", {})
        assert store.get_space(space).metric == "cosine"
        assert len(store.list_spaces()) == 1

    @pytest.mark.parametrize("call", CALLS_ON_SPACE.values(), ids=CALLS_ON_SPACE.keys())
    def test_an_unknown_space_is_not_found(self, store, space, call):
        with pytest.raises(NotFound, match="nowhere"):
            call(store)
        assert [s.name for s in store.list_spaces()] == [space]

    # --- rows -------------------------------------------------------------------------
    def test_add_then_get_round_trips_every_column(self, store, space):
        metadata = [
            {"confidence": 0.25, "tags": ["a", "b"], "nested": {"k": [1, 2.5, None]}},
            None,
            {"text": 'naïve ☃ "quoted" \\ \'', "flag": False},
        ]
        outputs = [[0.25, -1.5, 3.0], None, []]
        rows = batch(
            ["img-1", "img-2", "img-3"],
            dataset=["cifar10", "cifar10", "mnist"],
            context=["training", "production", "validation"],
            input_uri=["s3://b/1.png", None, "file:///x y.png"],
            inference=["cat", "dog", None],
            label=["cat", None, "7"],
            metadata=metadata,
            outputs=outputs,
        )
        seqs = store.add(space, rows)

        got = store.get(space, include_embeddings=True)
        assert got.column_names == ["seq", *CATALOGUE_COLUMNS, "embedding", "output"]
        assert got.schema.field("seq").type == pa.int64()
        assert seqs_of(got) == seqs.tolist()
        for name in CATALOGUE_COLUMNS:
            if name != "metadata":
                assert got.column(name).to_pylist() == rows.column(name).to_pylist(), name
        stored_metadata = got.column("metadata").to_pylist()
        assert [None if m is None else json.loads(m) for m in stored_metadata] == metadata

        embedding_type = got.schema.field("embedding").type
        assert pa.types.is_fixed_size_list(embedding_type)
        assert embedding_type.list_size == DIM
        assert embedding_type.value_type == pa.float32()
        assert embeddings_of(got).tobytes() == embeddings_of(rows).tobytes()

        assert got.schema.field("output").type.value_type == pa.float32()
        assert got.column("output").to_pylist() == outputs

        plain = store.get(space)
        assert plain.column_names == ["seq", *CATALOGUE_COLUMNS]
        assert plain.column("metadata").to_pylist() == stored_metadata

    def test_get_on_an_empty_space(self, store, space):
        assert store.get(space).num_rows == 0
        assert store.get(space, include_embeddings=True).num_rows == 0
        assert store.count(space) == 0
        assert store.max_seq(space) == 0
        seqs, vectors = store.vectors(space)
        assert len(seqs) == 0 and len(vectors) == 0

    def test_the_first_add_fixes_the_dimension(self, store, space):
        assert store.get_space(space).dim is None
        store.add(space, batch(["a", "b"], dim=DIM))
        assert store.get_space(space).dim == DIM

        with pytest.raises(DimensionMismatch):
            store.add(space, batch(["c", "d"], dim=DIM * 2))
        assert store.count(space) == 2
        assert store.get(space, ids=["c", "d"]).num_rows == 0
        assert store.get_space(space).dim == DIM

    def test_a_stored_id_conflicts_and_nothing_of_the_batch_is_stored(self, store, space):
        first = store.add(space, batch(["a", "b"]))
        with pytest.raises(Conflict, match="'b'"):
            store.add(space, batch(["c", "b", "d"]))
        assert store.count(space) == 2
        assert store.get(space, ids=["c", "d"]).num_rows == 0
        assert ids_of(store.get(space)) == ["a", "b"]

        later = store.add(space, batch(["c", "d"]))
        assert later.min() > first.max()
        assert ids_of(store.get(space)) == ["a", "b", "c", "d"]

    def test_seqs_increase_and_are_never_reused(self, store, space):
        assert store.max_seq(space) == 0
        first = store.add(space, batch(["a", "b", "c"]))
        assert first.dtype == np.int64
        assert len(first) == 3 and (np.diff(first) > 0).all()
        assert store.max_seq(space) == first.max()

        second = store.add(space, batch(["d", "e"]))
        assert second.min() > first.max()
        assert store.max_seq(space) == second.max()

        store.delete(space, ids=["d", "e"])
        assert store.max_seq(space) == second.max()
        third = store.add(space, batch(["d"]))
        assert third[0] > second.max()
        assert seqs_of(store.get(space)) == [*first.tolist(), *third.tolist()]

    # --- batch keys --------------------------------------------------------------------
    def test_a_batch_sent_again_under_its_key_is_stored_once(self, store, space):
        rows = batch(["a", "b", "c"], label=["cat", None, "dog"], outputs=[[1.0], None, [2.0, 3.0]])
        first = store.add(space, rows, batch_key="k-1")
        with pytest.raises(BatchAlreadyStored) as again:
            store.add(space, rows, batch_key="k-1")
        assert again.value.seqs.dtype == np.int64
        assert again.value.seqs.tolist() == first.tolist()
        # the same values in other Arrow arrays are the same batch
        with pytest.raises(BatchAlreadyStored):
            store.add(space, pa.concat_tables([rows.slice(0, 1), rows.slice(1)]), batch_key="k-1")
        assert store.count(space) == 3
        assert seqs_of(store.get(space)) == first.tolist()
        assert store.max_seq(space) == first.max()

        # a batch without a key, or under another key, is a batch of its own
        later = store.add(space, batch(["d"]), batch_key="k-2")
        assert later[0] > first.max() and store.count(space) == 4

    def test_a_key_sent_with_other_rows_conflicts_and_stores_nothing(self, store, space):
        store.add(space, batch(["a", "b"]), batch_key="k-1")
        for other in (batch(["c", "d"]), batch(["a", "b"], label="cat"), batch(["a"])):
            with pytest.raises(Conflict, match="k-1"):
                store.add(space, other, batch_key="k-1")
        assert ids_of(store.get(space)) == ["a", "b"]
        assert store.get(space, ids=["c", "d"]).num_rows == 0

    def test_a_key_still_names_its_batch_after_rows_of_it_are_deleted(self, store, space):
        rows = batch(["a", "b"])
        first = store.add(space, rows, batch_key="k-1")
        store.delete(space, ids=["a"])
        with pytest.raises(BatchAlreadyStored) as again:
            store.add(space, rows, batch_key="k-1")
        assert again.value.seqs.tolist() == first.tolist()
        assert ids_of(store.get(space)) == ["b"]

    def test_batch_keys_belong_to_one_space(self, store, space):
        store.create_space("other", "l2", {})
        rows = batch(["a", "b"])
        in_space = store.add(space, rows, batch_key="k-1")
        in_other = store.add("other", batch(["x"]), batch_key="k-1")
        assert store.count(space) == 2 and store.count("other") == 1
        with pytest.raises(BatchAlreadyStored) as again:
            store.add(space, rows, batch_key="k-1")
        assert again.value.seqs.tolist() == in_space.tolist()

        # a space dropped and made again starts without keys
        store.delete_space("other")
        store.create_space("other", "l2", {})
        assert store.add("other", batch(["x"]), batch_key="k-1").tolist() == [1]
        assert in_other.tolist() == [1]

    def test_a_batch_key_survives_closing_and_reopening(self, reopen):
        store = reopen()
        store.create_space("space", "l2", {})
        rows = batch(["a", "b", "c"])
        first = store.add("space", rows, batch_key="k-1")
        store.close()

        store = reopen()
        with pytest.raises(BatchAlreadyStored) as again:
            store.add("space", rows, batch_key="k-1")
        assert again.value.seqs.tolist() == first.tolist()
        assert store.count("space") == 3
        with pytest.raises(Conflict, match="k-1"):
            store.add("space", batch(["d"]), batch_key="k-1")

    def test_the_same_batch_sent_at_once_from_several_threads_is_stored_once(self, store, space):
        threads = 4
        rows = batch([f"r{i}" for i in range(50)])
        start = threading.Barrier(threads)
        stored: list[np.ndarray] = []
        repeated: list[np.ndarray] = []
        errors: list[BaseException] = []

        def writer() -> None:
            start.wait()
            try:
                stored.append(store.add(space, rows, batch_key="k-1"))
            except BatchAlreadyStored as exc:
                repeated.append(exc.seqs)
            except BaseException as exc:  # the main thread asserts on it
                errors.append(exc)

        workers = [threading.Thread(target=writer) for _ in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        assert errors == []
        assert len(stored) == 1 and len(repeated) == threads - 1
        assert all(seqs.tolist() == stored[0].tolist() for seqs in repeated)
        assert store.count(space) == 50

    def test_get_by_ids_in_seq_order(self, store, space):
        names = [f"id-{i:05d}" for i in range(1500)]
        seqs = store.add(space, batch(names))
        by_id = dict(zip(names, seqs.tolist(), strict=True))

        wanted = names[::-1][:1200] + ["unknown-1", "unknown-2"]
        got = store.get(space, ids=wanted)
        assert got.num_rows == 1200
        assert seqs_of(got) == sorted(by_id[i] for i in wanted[:1200])
        assert set(ids_of(got)) == set(wanted[:1200])

        assert store.get(space, ids=["unknown"]).num_rows == 0
        assert store.get(space, ids=[]).num_rows == 0
        both = store.get(space, ids=names[:10], where=parse({"id": {"$gte": "id-00005"}}))
        assert ids_of(both) == names[5:10]

    def test_get_with_limit_and_offset(self, store, space):
        names = [f"r{i}" for i in range(10)]
        store.add(space, batch(names, context=["training", "production"] * 5))
        assert ids_of(store.get(space, limit=3)) == names[:3]
        assert ids_of(store.get(space, limit=3, offset=3)) == names[3:6]
        assert ids_of(store.get(space, offset=8)) == names[8:]
        assert store.get(space, limit=0).num_rows == 0
        assert store.get(space, offset=20).num_rows == 0
        # limit and offset count matching rows, not stored rows
        production = parse({"context": "production"})
        assert ids_of(store.get(space, where=production, limit=2, offset=1)) == ["r3", "r5"]

    def test_count_with_where(self, store, space):
        store.add(space, batch(["a", "b", "c"], dataset=["x", "y", "x"]))
        assert store.count(space) == 3
        assert store.count(space, parse({"dataset": "x"})) == 2
        assert store.count(space, parse({"dataset": "z"})) == 0

    def test_delete_by_ids_returns_the_deleted_seqs(self, store, space):
        seqs = store.add(space, batch(["a", "b", "c", "d"]))
        deleted = store.delete(space, ids=["c", "a", "unknown"])
        assert deleted.dtype == np.int64
        assert sorted(deleted.tolist()) == [seqs[0], seqs[2]]
        assert ids_of(store.get(space)) == ["b", "d"]
        assert store.delete(space, ids=["a"]).tolist() == []

    def test_delete_by_where_and_ids(self, store, space):
        seqs = store.add(space, batch(["a", "b", "c", "d"], dataset=["x", "y", "x", "y"]))
        deleted = store.delete(space, where=parse({"dataset": "y"}))
        assert sorted(deleted.tolist()) == [seqs[1], seqs[3]]
        assert ids_of(store.get(space)) == ["a", "c"]

        deleted = store.delete(space, ids=["a", "c"], where=parse({"id": "c"}))
        assert deleted.tolist() == [seqs[2]]
        assert ids_of(store.get(space)) == ["a"]

    def test_delete_without_ids_or_where_deletes_nothing(self, store, space):
        store.add(space, batch(["a", "b"]))
        assert len(store.delete(space)) == 0
        assert len(store.delete(space, ids=[])) == 0
        assert store.count(space) == 2

    def test_delete_removes_the_priorities_of_deleted_rows(self, store, space):
        store.add(space, batch(["a", "b", "c"], dataset=["x", "x", "y"]))
        store.replace_priorities(space, scores({"a": 0.9, "b": 0.5, "c": 0.1}))
        store.delete(space, ids=["a"])
        store.delete(space, where=parse({"dataset": "y"}))
        assert ids_of(store.priorities(space)) == ["b"]

        # a row added again under a deleted id starts without a score
        store.add(space, batch(["a"]))
        assert ids_of(store.priorities(space)) == ["b"]

    # --- replacing rows ----------------------------------------------------------------
    def test_replace_swaps_stored_rows_for_new_ones_and_adds_the_rest(self, store, space):
        require(store, ReplaceRows)
        first = store.add(space, batch(["a", "b", "c"], label="cat", dataset="old"))
        store.replace_priorities(space, scores({"a": 0.9, "b": 0.5, "c": 0.1}))
        new = batch(["b", "d"], label="dog", dataset="new")
        seqs, replaced = store.replace(space, new)
        assert seqs.dtype == np.int64 and replaced.dtype == np.int64
        assert replaced.tolist() == [int(first[1])]
        assert seqs.min() > first.max() and store.max_seq(space) == seqs.max()
        got = store.get(space, include_embeddings=True)
        assert ids_of(got) == ["a", "c", "b", "d"]
        assert seqs_of(got) == [int(first[0]), int(first[2]), *seqs.tolist()]
        assert got.column("label").to_pylist() == ["cat", "cat", "dog", "dog"]
        # the new row whole, embedding included
        b = ids_of(got).index("b")
        embeddings = got.column("embedding").to_pylist()
        assert embeddings[b] == new.column("embedding").to_pylist()[0]
        assert store.count(space) == 4
        # the replaced row's score went with it; the others keep theirs
        assert sorted(ids_of(store.priorities(space))) == ["a", "c"]

    def test_replace_checks_the_dimension_and_stores_nothing_of_a_bad_batch(self, store, space):
        require(store, ReplaceRows)
        store.add(space, batch(["a", "b"], label="cat"))
        with pytest.raises(DimensionMismatch):
            store.replace(space, batch(["b"], dim=DIM + 1))
        got = store.get(space)
        assert ids_of(got) == ["a", "b"] and got.column("label").to_pylist() == ["cat", "cat"]

    def test_replace_under_a_key_is_done_once(self, store, space):
        require(store, ReplaceRows)
        store.add(space, batch(["a", "b"], label="cat"))
        rows = batch(["a"], label="dog")
        seqs, _ = store.replace(space, rows, batch_key="r-1")
        with pytest.raises(BatchAlreadyStored) as again:
            store.replace(space, rows, batch_key="r-1")
        assert again.value.seqs.tolist() == seqs.tolist()
        got = store.get(space)
        assert ids_of(got) == ["b", "a"] and got.column("label").to_pylist() == ["cat", "dog"]
        # an id replaced is free to be added again only after it is deleted
        with pytest.raises(Conflict, match="'a'"):
            store.add(space, batch(["a"]))
        store.delete(space, ids=["a"])
        store.add(space, batch(["a"], label="bird"))
        assert store.get(space, ids=["a"]).column("label").to_pylist() == ["bird"]

    def test_vectors(self, store, space):
        rows = batch([f"v{i}" for i in range(6)], dataset=["x", "y"] * 3)
        seqs = store.add(space, rows)
        matrix = embeddings_of(rows)

        found, vectors = store.vectors(space)
        assert found.dtype == np.int64 and found.tolist() == seqs.tolist()
        assert vectors.dtype == np.float32 and vectors.shape == (6, DIM)
        assert vectors.tobytes() == matrix.tobytes()

        found, vectors = store.vectors(space, where=parse({"dataset": "y"}))
        assert found.tolist() == seqs[1::2].tolist()
        np.testing.assert_array_equal(vectors, matrix[1::2])

        store.delete(space, ids=["v0"])
        found, vectors = store.vectors(space, seqs=np.array([seqs[4], seqs[0], seqs[2], 10**9]))
        assert found.tolist() == [seqs[2], seqs[4]]
        np.testing.assert_array_equal(vectors, matrix[[2, 4]])

        found, vectors = store.vectors(space, after_seq=int(seqs[3]))
        assert found.tolist() == seqs[4:].tolist()
        np.testing.assert_array_equal(vectors, matrix[4:])

        found, vectors = store.vectors(space, after_seq=int(seqs[0]), with_vectors=False)
        assert found.tolist() == seqs[1:].tolist()
        assert vectors is None

        found, vectors = store.vectors(space, seqs=np.array([], dtype=np.int64))
        assert len(found) == 0 and vectors.shape[0] == 0

    def test_rows_by_seq_leaves_out_deleted_seqs(self, store, space):
        rows = batch(["a", "b", "c"], label=["cat", None, "dog"], metadata=[{"k": 1}, None, None])
        seqs = store.add(space, rows)
        store.delete(space, ids=["b"])

        got = store.rows_by_seq(space, np.array([seqs[2], seqs[1], seqs[0], 10**9]))
        assert got.column_names[:1] == ["seq"]
        assert set(CATALOGUE_COLUMNS) <= set(got.column_names)
        assert got.schema.field("seq").type == pa.int64()
        found = {row["seq"]: row for row in got.to_pylist()}
        assert set(found) == {seqs[0], seqs[2]}
        assert found[seqs[0]]["id"] == "a" and found[seqs[0]]["label"] == "cat"
        assert json.loads(found[seqs[0]]["metadata"]) == {"k": 1}
        assert found[seqs[2]]["id"] == "c"
        assert store.rows_by_seq(space, np.array([], dtype=np.int64)).num_rows == 0

    @pytest.mark.parametrize(
        ("where", "expected"), FILTER_CASES, ids=[f"{json.dumps(w):.60}" for w, _ in FILTER_CASES]
    )
    def test_where(self, filter_store, where, expected):
        condition = parse(where)
        assert "".join(ids_of(filter_store.get("space", where=condition))) == expected
        assert filter_store.count("space", condition) == len(expected)
        assert (
            "".join(sorted(ids_of(filter_store.priorities("space", where=condition)))) == expected
        )
        found, _ = filter_store.vectors("space", where=condition, with_vectors=False)
        assert len(found) == len(expected)

    def test_a_filter_of_as_many_terms_as_allowed_is_answered(self, filter_store):
        ids = list(FILTER_ROWS)
        # 999 terms, one short of the most a filter may hold: each term a row's id, or none
        terms = [{"id": ids[i % len(ids)]} for i in range(len(ids))]
        terms += [{"id": f"absent-{i}"} for i in range(999 - len(terms))]
        found = filter_store.get("space", where=parse({"$or": terms}))
        assert sorted(ids_of(found)) == sorted(ids)
        assert filter_store.count("space", parse({"$or": terms})) == len(ids)
        everything = [{"id": {"$ne": f"absent-{i}"}} for i in range(999)]
        assert filter_store.count("space", parse({"$and": everything})) == len(ids)

    def test_where_leaves_the_store_intact(self, filter_store):
        for where, _ in FILTER_CASES:
            filter_store.get("space", where=parse(where))
        assert filter_store.count("space") == len(FILTER_ROWS)
        assert [s.name for s in filter_store.list_spaces()] == ["space"]

    # --- priorities -----------------------------------------------------------------------
    def test_priorities_highest_first_with_ties_by_id(self, store, space):
        store.add(
            space,
            batch(
                ["a", "b", "c", "d"], dataset=["x", "x", "y", "y"], label=["cat", None, "dog", "7"]
            ),
        )
        store.replace_priorities(
            space, scores({"c": 0.5, "b": 0.9, "a": 0.5, "d": 0.1, "zzz": 1.0})
        )

        ranked = store.priorities(space)
        assert ranked.column_names[:4] == PRIORITY_COLUMNS
        assert set(ranked.column_names) == {*PRIORITY_COLUMNS, *PRIORITY_CATALOGUE}
        assert ids_of(ranked) == ["b", "a", "c", "d"]
        assert ranked.column("priority").to_pylist() == [0.9, 0.5, 0.5, 0.1]
        assert json.loads(ranked.column("components")[0].as_py()) == {"uncertainty": 0.9}
        assert ranked.column("computed_at")[0].as_py() == "2024-05-01T12:00:00+00:00"
        assert ranked.column("dataset").to_pylist() == ["x", "x", "y", "y"]
        assert ranked.column("label").to_pylist() == [None, "cat", "dog", "7"]

        assert ids_of(store.priorities(space, n=2)) == ["b", "a"]
        assert store.priorities(space, n=0).num_rows == 0
        assert ids_of(store.priorities(space, min_priority=0.5)) == ["b", "a", "c"]
        assert ids_of(store.priorities(space, where=parse({"dataset": "y"}))) == ["c", "d"]
        assert ids_of(store.priorities(space, n=1, where=parse({"dataset": "y"}))) == ["c"]
        assert (
            ids_of(store.priorities(space, where=parse({"label": None}), min_priority=0.95)) == []
        )

    def test_replacing_priorities_drops_the_old_scores(self, store, space):
        store.add(space, batch(["a", "b", "c"]))
        store.replace_priorities(space, scores({"a": 0.9, "b": 0.8}))
        store.replace_priorities(space, scores({"c": 0.1}))
        ranked = store.priorities(space)
        assert ids_of(ranked) == ["c"]
        assert ranked.column("priority").to_pylist() == [0.1]

        store.replace_priorities(space, scores({}))
        assert store.priorities(space).num_rows == 0

    def test_priorities_of_one_space_leave_others_alone(self, store, space):
        store.create_space("other", "l2", {})
        store.add(space, batch(["a"]))
        store.add("other", batch(["a"]))
        store.replace_priorities(space, scores({"a": 0.3}))
        store.replace_priorities("other", scores({"a": 0.7}))
        store.replace_priorities(space, scores({"a": 0.4}))
        assert store.priorities("other").column("priority").to_pylist() == [0.7]
        assert store.priorities(space).column("priority").to_pylist() == [0.4]

    # --- triggers -------------------------------------------------------------------------
    def test_create_and_get_a_trigger(self, store, space):
        selection = {"n": 2, "where": {"dataset": "cifar10"}}
        trigger = store.create_trigger(space, items({"a": 0.5, "b": 0.9}), "retrain", selection)
        assert set(trigger) == TRIGGER_KEYS
        assert isinstance(trigger["id"], int)
        assert trigger["space"] == space
        assert trigger["status"] == "pending"
        assert trigger["note"] == "retrain"
        assert trigger["selection"] == selection
        assert trigger["count"] == 2
        assert trigger["deliveries"] == {}
        assert trigger["created_at"] and trigger["updated_at"] >= trigger["created_at"]
        assert store.get_trigger(trigger["id"]) == trigger

        without_note = store.create_trigger(space, items({"c": 0.1}), None, {})
        assert without_note["note"] is None
        assert without_note["id"] != trigger["id"]

    def test_trigger_items_highest_priority_first(self, store, space):
        trigger = store.create_trigger(space, items({"a": 0.2, "b": 0.9, "c": 0.5}), None, {})
        stored = store.trigger_items(trigger["id"])
        assert stored.column_names == ITEM_COLUMNS
        assert ids_of(stored) == ["b", "c", "a"]
        assert stored.column("priority").to_pylist() == [0.9, 0.5, 0.2]
        assert stored.column("input_uri").to_pylist()[0] == "s3://bucket/b.png"
        assert stored.column("label").to_pylist() == [None, None, None]
        assert stored.column("inference").to_pylist() == ["cat"] * 3

    def test_list_triggers_newest_first_by_space_and_status(self, store, space):
        store.create_space("other", "l2", {})
        first = store.create_trigger(space, items({"a": 1.0}), "1", {})["id"]
        second = store.create_trigger("other", items({"a": 1.0}), "2", {})["id"]
        third = store.create_trigger(space, items({"a": 1.0}), "3", {})["id"]
        store.update_trigger(first, status="done")

        def listed(**kwargs) -> list[int]:
            return [t["id"] for t in store.list_triggers(**kwargs)]

        assert listed() == [third, second, first]
        assert listed(space=space) == [third, first]
        assert listed(space="other") == [second]
        assert listed(status="done") == [first]
        assert listed(space=space, status="pending") == [third]
        assert listed(space="other", status="failed") == []
        assert all(set(t) == TRIGGER_KEYS for t in store.list_triggers())

    def test_update_trigger_status_and_merge_deliveries(self, store, space):
        trigger_id = store.create_trigger(space, items({"a": 1.0}), None, {})["id"]

        updated = store.update_trigger(trigger_id, status="acknowledged")
        assert updated["status"] == "acknowledged"
        assert store.get_trigger(trigger_id)["status"] == "acknowledged"

        store.update_trigger(trigger_id, delivery=("manifest", {"ok": True, "path": "/x.csv"}))
        updated = store.update_trigger(
            trigger_id, delivery=("webhook", {"ok": False, "error": "503"})
        )
        assert updated["deliveries"] == {
            "manifest": {"ok": True, "path": "/x.csv"},
            "webhook": {"ok": False, "error": "503"},
        }
        assert updated["status"] == "acknowledged"

        updated = store.update_trigger(
            trigger_id, status="done", delivery=("webhook", {"ok": True})
        )
        assert updated["status"] == "done"
        assert updated["deliveries"] == {"manifest": {"ok": True, "path": "/x.csv"},
                                         "webhook": {"ok": True}}  # fmt: skip
        assert store.get_trigger(trigger_id) == updated
        assert updated["updated_at"] >= updated["created_at"]

    def test_every_trigger_status_is_kept_and_listed(self, store, space):
        # the service refuses any other status before a store sees it
        made = {}
        for status in TRIGGER_STATUSES:
            trigger_id = store.create_trigger(space, items({"a": 1.0}), status, {})["id"]
            assert store.update_trigger(trigger_id, status=status)["status"] == status
            made[status] = trigger_id
        for status, trigger_id in made.items():
            assert store.get_trigger(trigger_id)["status"] == status
            assert [t["id"] for t in store.list_triggers(status=status)] == [trigger_id]
            assert store.list_triggers(space=space, status=status)[0]["note"] == status

    def test_an_unknown_trigger_is_not_found(self, store, space):
        known = store.create_trigger(space, items({"a": 1.0}), None, {})["id"]
        unknown = known + 1000
        with pytest.raises(NotFound):
            store.get_trigger(unknown)
        with pytest.raises(NotFound):
            store.update_trigger(unknown, status="done")
        with pytest.raises(NotFound):
            store.trigger_items(unknown)

    # --- whole store ------------------------------------------------------------------------
    def test_delete_space_drops_rows_priorities_and_triggers(self, store, space):
        store.create_space("other", "l2", {})
        for name in (space, "other"):
            store.add(name, batch(["a", "b"]))
            store.replace_priorities(name, scores({"a": 0.5, "b": 0.4}))
        doomed = store.create_trigger(space, items({"a": 0.5}), None, {})["id"]
        kept = store.create_trigger("other", items({"a": 0.5}), None, {})["id"]

        store.delete_space(space)
        with pytest.raises(NotFound):
            store.get_space(space)
        with pytest.raises(NotFound):
            store.get_trigger(doomed)
        assert [t["id"] for t in store.list_triggers()] == [kept]

        store.create_space(space, "l2", {})
        info = store.get_space(space)
        assert (info.count, info.dim) == (0, None)
        assert store.get(space).num_rows == 0
        assert store.priorities(space).num_rows == 0
        assert store.list_triggers(space=space) == []

        assert ids_of(store.get("other")) == ["a", "b"]
        assert ids_of(store.priorities("other")) == ["a", "b"]
        assert store.trigger_items(kept).num_rows == 1

    def test_data_survives_closing_and_reopening(self, reopen):
        store = reopen()
        made = store.create_space("space", "ip", {"name": "bert"})
        rows = batch(["a", "b", "c"], metadata={"k": "v"}, outputs=[[1.0, 2.0]] * 3)
        seqs = store.add("space", rows)
        store.delete("space", ids=["c"])
        store.replace_priorities("space", scores({"a": 0.1, "b": 0.2}))
        trigger = store.create_trigger("space", items({"b": 0.2}), "note", {"n": 1})
        trigger = store.update_trigger(trigger["id"], delivery=("manifest", {"ok": True}))
        store.close()

        store = reopen()
        found = store.get_space("space")
        assert found == SpaceInfo(
            "space", "ip", DIM, 2, {"name": "bert"}, found.created_at, made.space_id
        )
        got = store.get("space", include_embeddings=True)
        assert ids_of(got) == ["a", "b"]
        assert embeddings_of(got).tobytes() == embeddings_of(rows)[:2].tobytes()
        assert got.column("output").to_pylist() == [[1.0, 2.0]] * 2
        assert json.loads(got.column("metadata")[0].as_py()) == {"k": "v"}
        assert ids_of(store.priorities("space")) == ["b", "a"]
        assert store.get_trigger(trigger["id"]) == trigger
        assert ids_of(store.trigger_items(trigger["id"])) == ["b"]
        assert store.max_seq("space") == seqs.max()
        assert store.add("space", batch(["c"]))[0] > seqs.max()
        # a reopened store never gives a deleted space's number again
        store.delete_space("space")
        assert store.create_space("space", "ip", {}).space_id > made.space_id
        store.close()
        assert reopen().create_space("other", "ip", {}).space_id > made.space_id + 1

    def test_a_space_made_again_under_a_deleted_name_is_another_space(self, store):
        """What was derived from a deleted space (scores, a trigger) and is written under its
        ``space_id`` never lands in the space made again under its name."""
        old = store.create_space("again", "l2", {})
        store.add("again", batch(["a", "b"]))
        store.delete_space("again")
        new = store.create_space("again", "l2", {})
        store.add("again", batch(["a", "b"]))
        assert new.space_id > old.space_id
        assert store.get_space("again").space_id == new.space_id
        assert [s.space_id for s in store.list_spaces()] == [new.space_id]

        stale = {"space_id": old.space_id}
        with pytest.raises(NotFound, match="'again' was deleted"):
            store.replace_priorities("again", scores({"a": 0.9}), **stale)
        with pytest.raises(NotFound, match="'again' was deleted"):
            store.create_trigger("again", items({"a": 0.9}), None, {}, **stale)
        if isinstance(store, AddPriorities):
            with pytest.raises(NotFound, match="'again' was deleted"):
                store.add_priorities("again", scores({"b": 0.5}), **stale)
        assert store.priorities("again").num_rows == 0
        assert store.list_triggers("again") == []

        current = {"space_id": new.space_id}
        store.replace_priorities("again", scores({"a": 0.9}), **current)
        store.create_trigger("again", items({"a": 0.9}), None, {}, **current)
        if isinstance(store, AddPriorities):
            assert store.add_priorities("again", scores({"b": 0.5}), **current) == 1
        assert ids_of(store.priorities("again"))[0] == "a"
        assert len(store.list_triggers("again")) == 1

    def test_concurrent_adds_all_land_with_distinct_seqs(self, store, space):
        threads, batches, size = 4, 20, 5
        start = threading.Barrier(threads + 1)
        seqs: list[np.ndarray] = []
        errors: list[BaseException] = []
        counts: list[int] = []

        def writer(t: int) -> None:
            try:
                start.wait()
                for b in range(batches):
                    ids = [f"t{t}-b{b}-r{r}" for r in range(size)]
                    seqs.append(store.add(space, batch(ids)))
            except BaseException as exc:  # the main thread asserts on it
                errors.append(exc)

        def reader() -> None:
            try:
                start.wait()
                while any(w.is_alive() for w in workers):
                    counts.append(store.count(space))
                    store.get(space, where=parse({"dataset": "cifar10"}), limit=10)
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
        watcher = threading.Thread(target=reader)
        for thread in [*workers, watcher]:
            thread.start()
        for thread in [*workers, watcher]:
            thread.join()

        assert errors == []
        total = threads * batches * size
        assigned = np.concatenate(seqs)
        assert len(assigned) == total and len(np.unique(assigned)) == total
        assert store.count(space) == total
        assert sorted(seqs_of(store.get(space))) == sorted(assigned.tolist())
        assert store.max_seq(space) == assigned.max()
        assert counts == sorted(counts)
        assert all(count % size == 0 for count in counts)

    # --- back-up and restore ------------------------------------------------------------
    @pytest.mark.parametrize(("power", "call"), RESTORE_CALLS.values(), ids=RESTORE_CALLS.keys())
    def test_back_up_and_restore_calls_on_an_unknown_space_are_not_found(
        self, store, space, power, call
    ):
        require(store, power)
        with pytest.raises(NotFound, match="nowhere"):
            call(store)
        assert [s.name for s in store.list_spaces()] == [space]

    def test_rows_page_reads_every_stored_column_a_page_at_a_time(self, store, space):
        require(store, PagedBackup)
        store.add(space, batch(["a", "b", "c"], metadata={"k": 1}, outputs=[[0.5, 1.5]] * 3))
        store.add(space, batch(["d", "e"], context="production", label="cat"))
        store.delete(space, ids=["b"])
        whole = store.get(space, include_embeddings=True)

        pages, after = [], 0
        while (page := store.rows_page(space, after_seq=after, limit=2)).num_rows:
            assert page.num_rows <= 2
            pages.append(page)
            after = seqs_of(page)[-1]
        read = pa.concat_tables(pages)
        assert read.column_names == whole.column_names
        assert read.equals(whole)
        assert len(pages) == 2
        assert store.rows_page(space, after_seq=seqs_of(whole)[1], limit=10).equals(whole.slice(2))

    def test_rows_page_of_an_empty_space(self, store, space):
        require(store, PagedBackup)
        page = store.rows_page(space, after_seq=0, limit=10)
        assert page.num_rows == 0
        assert page.column_names == ["seq", *CATALOGUE_COLUMNS, "embedding", "output"]

    def test_priorities_page_in_id_order_with_the_seq_scored(self, store, space):
        require(store, PagedBackup)
        ids = ["b", "a", "é", "Z", "c", "d"]
        seqs = dict(zip(ids, store.add(space, batch(ids)).tolist(), strict=True))
        stored = scores(dict(zip(ids, [0.5, 0.9, 0.1, 0.3, 0.7, 0.2], strict=True)))
        store.replace_priorities(space, stored)
        store.delete(space, ids=["c"])

        pages, after = [], None
        while (page := store.priorities_page(space, after_id=after, limit=2)).num_rows:
            pages.append(page)
            after = ids_of(page)[-1]
        read = pa.concat_tables(pages)
        assert read.column_names == [*PRIORITY_COLUMNS, "seq"]
        assert ids_of(read) == ["Z", "a", "b", "d", "é"]  # bytewise, the deleted row left out
        assert read.column("seq").to_pylist() == [seqs[i] for i in ids_of(read)]
        assert read.schema.field("seq").type == pa.int64()
        by_id = {row["id"]: row for row in stored.to_pylist()}
        for row in read.to_pylist():
            expected = by_id[row["id"]]
            assert (row["priority"], row["components"], row["computed_at"]) == (
                expected["priority"], expected["components"], expected["computed_at"],
            )  # fmt: skip

    def test_restore_space_keeps_its_creation_time_and_dimension(self, store):
        require(store, Restore)
        info = SpaceInfo("restored", "ip", None, 0, {"name": "bert", "layer": 11},
                         "2023-01-02T03:04:05.678+00:00")  # fmt: skip
        restored = store.restore_space(info)
        assert restored == replace(info, space_id=restored.space_id)
        assert restored.space_id > 0
        assert store.get_space("restored") == restored
        with pytest.raises(Conflict, match="restored"):
            store.restore_space(info)
        with pytest.raises(Conflict):
            store.create_space("restored", "ip", {})

        # a space whose rows were all deleted keeps the dimension its first rows fixed
        fixed = SpaceInfo("emptied", "l2", DIM, 0, {}, "2023-01-02T03:04:05+00:00")
        fixed = replace(fixed, space_id=store.restore_space(fixed).space_id)
        assert store.get_space("emptied") == fixed
        with pytest.raises(DimensionMismatch):
            store.restore_rows("emptied", batch(["a"], dim=DIM + 1), np.array([1]))
        store.restore_rows("emptied", batch(["a"]), np.array([1]))
        assert store.get_space("emptied").count == 1

    def test_restored_rows_keep_their_seqs(self, store, space):
        require(store, Restore)
        rows = batch(["a", "b", "c"], metadata={"k": "v"}, outputs=[[1.0], None, [2.0, 3.0]])
        store.restore_rows(space, rows, np.array([3, 7, 10]))
        got = store.get(space, include_embeddings=True)
        assert seqs_of(got) == [3, 7, 10]
        assert ids_of(got) == ["a", "b", "c"]
        assert embeddings_of(got).tobytes() == embeddings_of(rows).tobytes()
        assert got.column("output").to_pylist() == [[1.0], None, [2.0, 3.0]]
        assert store.get_space(space).dim == DIM
        assert store.max_seq(space) == 10
        assert store.vectors(space)[0].tolist() == [3, 7, 10]

        store.restore_rows(space, batch(["d"]), np.array([12]))
        assert store.add(space, batch(["e"])).tolist() == [13]
        assert seqs_of(store.get(space)) == [3, 7, 10, 12, 13]

    def test_restored_rows_are_checked_and_all_or_nothing(self, store, space):
        require(store, Restore)
        store.restore_rows(space, batch(["a", "b"]), np.array([5, 6]))
        with pytest.raises(Conflict, match="seq"):
            store.restore_rows(space, batch(["c", "d"]), np.array([6, 8]))
        with pytest.raises(Conflict, match="'b'"):
            store.restore_rows(space, batch(["c", "b"]), np.array([8, 9]))
        with pytest.raises(DimensionMismatch):
            store.restore_rows(space, batch(["c"], dim=DIM + 1), np.array([8]))
        assert ids_of(store.get(space)) == ["a", "b"]
        assert store.count(space) == 2
        # a store may count the seqs of a refused batch as spent
        above = store.max_seq(space)
        store.restore_rows(space, batch(["c", "d"]), np.array([above + 2, above + 3]))
        assert seqs_of(store.get(space)) == [5, 6, above + 2, above + 3]

    def test_restored_priorities_are_added_verbatim(self, store, space):
        require(store, Restore)
        store.add(space, batch(["a", "b", "c", "d"], context="production"))
        store.restore_priorities(space, scores({"a": 0.2, "b": 0.9}))
        store.restore_priorities(space, scores({"c": 0.5}))
        got = store.priorities(space)
        assert ids_of(got) == ["b", "c", "a"]
        assert json.loads(got.column("components")[0].as_py()) == {"uncertainty": 0.9}
        assert got.column("computed_at").to_pylist() == ["2024-05-01T12:00:00+00:00"] * 3

        with pytest.raises(NotFound, match="'x'"):
            store.restore_priorities(space, scores({"d": 0.1, "x": 0.3}))
        with pytest.raises(Conflict, match="'a'"):
            store.restore_priorities(space, scores({"d": 0.1, "a": 0.3}))
        assert ids_of(store.priorities(space)) == ["b", "c", "a"]
        assert store.priorities(space).column("priority").to_pylist() == [0.9, 0.5, 0.2]

    def test_a_restored_trigger_keeps_its_id_record_and_item_order(self, store, space):
        require(store, Restore)
        stored = items({"a": 0.2, "b": 0.9, "c": 0.9, "d": None})
        trigger = store.restore_trigger(space, restored_trigger(41), stored)
        assert trigger == {**restored_trigger(41), "space": space, "count": 4}
        assert store.get_trigger(41) == trigger
        assert store.list_triggers(space=space, status="acknowledged") == [trigger]
        got = store.trigger_items(41)
        assert got.column_names == ITEM_COLUMNS
        # priority first, then the order they were given in; a missing priority last
        assert ids_of(got) == ["b", "c", "a", "d"]
        assert got.column("input_uri").to_pylist()[0] == "s3://bucket/b.png"

        again = store.restore_trigger(space, restored_trigger(41, note="copy"), items({"e": 1.0}))
        assert again["id"] > 41 and again["note"] == "copy"
        assert ids_of(store.trigger_items(41)) == ["b", "c", "a", "d"]
        assert store.create_trigger(space, items({"f": 1.0}), None, {})["id"] > again["id"]
        empty = store.restore_trigger(space, restored_trigger(7), items({}))
        assert (empty["id"], empty["count"], store.trigger_items(7).num_rows) == (7, 0, 0)

    def test_a_restored_trigger_takes_the_id_of_a_deleted_space_s_trigger(self, store, space):
        require(store, Restore)
        store.create_space("gone", "l2", {})
        old = store.create_trigger("gone", items({"x": 1.0}), None, {})
        store.delete_space("gone")
        trigger = store.restore_trigger(space, restored_trigger(old["id"]), items({"a": 0.5}))
        assert trigger["id"] == old["id"]
        assert ids_of(store.trigger_items(old["id"])) == ["a"]
        assert [t["id"] for t in store.list_triggers()] == [old["id"]]

    def test_restored_data_survives_closing_and_reopening(self, reopen):
        store = reopen()
        require(store, Restore)
        store.restore_space(SpaceInfo("space", "l2", None, 0, {}, "2023-01-02T03:04:05+00:00"))
        store.restore_rows("space", batch(["a", "b"]), np.array([4, 9]))
        store.restore_priorities("space", scores({"b": 0.5}))
        trigger = store.restore_trigger("space", restored_trigger(3), items({"b": 0.5}))
        store.close()

        store = reopen()
        assert store.get_space("space").created_at == "2023-01-02T03:04:05+00:00"
        assert seqs_of(store.get("space")) == [4, 9]
        assert ids_of(store.priorities("space")) == ["b"]
        assert store.get_trigger(3) == trigger
        assert store.add("space", batch(["c"])).tolist() == [10]

    # --- nearest neighbours -----------------------------------------------------------
    def test_neighbors_the_store_finds_are_the_nearest_matching_rows(self, store):
        require(store, NeighborSearch)
        names = [f"r{i}" for i in range(40)]
        rows = batch(names, dataset=["x", "y"] * 20)
        matrix = embeddings_of(rows)
        queries = matrix[:3] + np.float32(0.01)
        answered = 0
        for metric in ("l2", "cosine", "ip"):
            store.create_space(metric, metric, {})
            seqs = store.add(metric, rows)
            # deleted rows are never found
            store.delete(metric, ids=["r0", "r2"])
            info = store.get_space(metric, count=False)
            for where, live in (
                (parse({"dataset": "x"}), np.arange(4, 40, 2)),
                (None, np.r_[1, 3:40]),
            ):
                answer = store.nearest_neighbors(info, queries, 5, where)
                if answer is None:  # left to the index plugins
                    continue
                answered += 1
                assert isinstance(answer.meta.get("method"), str) and answer.meta["method"]
                assert answer.seqs.shape == answer.distances.shape == (3, 5)
                assert answer.seqs.dtype == np.int64
                truth, distances = exact_knn(queries, matrix[live], 5, metric)
                assert answer.seqs.tolist() == seqs[live][truth].tolist(), (metric, where)
                np.testing.assert_allclose(answer.distances, distances, atol=1e-4)
        assert answered, "the store answered no query itself"

    def test_fewer_matching_rows_than_k_leave_the_rest_of_the_answer_empty(self, store, space):
        require(store, NeighborSearch)
        seqs = store.add(space, batch(["a", "b", "c"], dataset=["x", "x", "y"]))
        info = store.get_space(space, count=False)
        queries = embeddings_of(batch(["q"]))
        answer = store.nearest_neighbors(info, queries, 4, parse({"dataset": "x"}))
        if answer is None:
            pytest.skip("the store leaves this query to the index plugins")
        assert answer.seqs.shape == (1, 4)
        assert sorted(answer.seqs[0, :2].tolist()) == seqs[:2].tolist()
        assert answer.seqs[0, 2:].tolist() == [-1, -1]

    # --- scores added as rows arrive, settings ---------------------------------------
    def test_add_priorities_stores_only_rows_without_a_score(self, store, space):
        require(store, AddPriorities)
        store.add(space, batch(["a", "b", "c", "d"]))
        store.delete(space, ids=["d"])
        store.replace_priorities(space, scores({"a": 0.9}))
        # a keeps its score, d is deleted, zzz was never stored; b once, its first score
        added = store.add_priorities(space, scores({"a": 0.1, "b": 0.5, "d": 0.7, "zzz": 1.0}))
        assert added == 1
        added = store.add_priorities(space, scores({"b": 0.2, "c": 0.3}))
        assert added == 1
        ranked = store.priorities(space)
        assert ids_of(ranked) == ["a", "b", "c"]
        assert ranked.column("priority").to_pylist() == [0.9, 0.5, 0.3]
        assert json.loads(ranked.column("components")[1].as_py()) == {"uncertainty": 0.5}
        assert store.add_priorities(space, scores({})) == 0
        # a full computation replaces them all, as before
        store.replace_priorities(space, scores({"c": 0.4}))
        store.add_priorities(space, scores({"a": 0.6}))
        assert ids_of(store.priorities(space)) == ["a", "c"]
        with pytest.raises(NotFound):
            store.add_priorities("nowhere", scores({"a": 0.1}))

    def test_scored_rows_after_follow_seq_order_with_each_score(self, store, space):
        require(store, FollowRows)
        assert store.last_seq(space) == 0
        assert store.scored_rows_after(space, after_seq=0, limit=10).num_rows == 0
        first = seqs_of_added(store.add(space, batch(["a", "b"], context="training")))
        later = store.add(
            space, batch(["c", "d", "e"], context="triage", dataset=["x", "y", "x"], label="l")
        )
        store.delete(space, ids=["d"])
        store.replace_priorities(space, scores({"c": 0.75}))
        store.add_priorities(space, scores({"e": 0.25}))
        assert store.last_seq(space) == int(later[-1])
        found = store.scored_rows_after(space, after_seq=0, limit=10)
        assert ids_of(found) == ["a", "b", "c", "e"]
        assert seqs_of(found) == [*first, int(later[0]), int(later[2])]
        assert found.column("priority").to_pylist() == [None, None, 0.75, 0.25]
        assert found.column("computed_at").to_pylist()[:2] == [None, None]
        assert found.column("computed_at")[2].as_py() is not None
        assert found.column("dataset").to_pylist() == ["cifar10", "cifar10", "x", "x"]
        assert found.column("label").to_pylist() == [None, None, "l", "l"]
        assert found.column("seq").type == pa.int64()
        assert found.column("priority").type == pa.float64()
        # a page starts after a seq and stops at its limit, filtered by where
        page = store.scored_rows_after(space, after_seq=first[1], limit=1)
        assert ids_of(page) == ["c"]
        where = parse({"context": "triage"})
        assert ids_of(store.scored_rows_after(space, after_seq=0, limit=10, where=where)) == [
            "c",
            "e",
        ]
        with pytest.raises(NotFound):
            store.scored_rows_after("nowhere", after_seq=0, limit=1)

    def test_space_settings_are_set_replaced_removed_and_kept(self, reopen):
        store = reopen()
        require(store, SpaceSettings)
        store.create_space("space", "l2", {})
        store.create_space("other", "l2", {})
        assert store.space_settings("space") == {}
        store.set_space_setting("space", "online", '{"k": 10}')
        store.set_space_setting("space", "rules", "[]")
        store.set_space_setting("other", "online", "x")
        store.set_space_setting("space", "online", '{"k": 5}')
        assert store.space_settings("space") == {"online": '{"k": 5}', "rules": "[]"}
        store.set_space_setting("space", "rules", None)
        store.set_space_setting("space", "never set", None)
        store.close()

        store = reopen()
        assert store.space_settings("space") == {"online": '{"k": 5}'}
        assert store.space_settings("other") == {"online": "x"}
        with pytest.raises(NotFound):
            store.space_settings("nowhere")
        with pytest.raises(NotFound):
            store.set_space_setting("nowhere", "online", "x")
        # a space made again under a deleted one's name starts with none
        store.delete_space("space")
        store.create_space("space", "l2", {})
        assert store.space_settings("space") == {}
