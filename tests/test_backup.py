"""Back-up and restore through the client: ``export_to`` and ``import_from`` on both stores,
embedded and over HTTP, and every way a back-up can be refused."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chroma_client import Client
from chroma_client.errors import (
    ChromaError,
    Conflict,
    ConnectionFailed,
    InvalidBackup,
    InvalidInput,
    NotFound,
)
from chroma_core import restore
from tests.conftest import Server
from tests.stores import STORES, store_environment

DIM = 16
MODEL = {"name": "resnet18", "layer": "avgpool"}


def embedded(store: str, path: Path, monkeypatch, **env) -> Client:
    """An in-process client on ``store`` with its data under ``path``."""
    for key, value in {**store_environment(store, path), **env}.items():
        monkeypatch.setenv(key, value)
    return Client(path=path)


def fill(client: Client, name: str, seed: int = 0, training: int = 240, triage: int = 120):
    """A space with every kind of thing a back-up holds: rows with metadata, outputs and
    gaps in their seqs, priorities, and triggers of both strategies in several states."""
    rng = np.random.default_rng(seed)
    space = client.space(name, metric="cosine", model=MODEL)
    space.add(
        rng.standard_normal((training, DIM)).astype(np.float32),
        dataset="pets-v1",
        labels=rng.integers(0, 3, training).astype(str).tolist(),
        input_uris=[f"s3://pets/{i}.jpg" for i in range(training)],
        metadata=[
            {"i": i, "tags": ["a", "é"], "nested": {"x": [1, None]}} for i in range(training)
        ],
        ids=[f"{name}-t{i}" for i in range(training)],
    )
    half = triage // 2
    space.add(
        rng.standard_normal((half, DIM)).astype(np.float32),
        dataset="prod-2026-11",
        context="triage",
        inferences=rng.integers(0, 3, half).astype(str).tolist(),
        outputs=rng.dirichlet(np.ones(3), half).astype(np.float32),
        ids=[f"{name}-p{i}" for i in range(half)],
    )
    space.add(
        rng.standard_normal((triage - half, DIM)).astype(np.float32),
        dataset="prod-2026-12",
        context="triage",
        inferences="1",
        ids=[f"{name}-q{i}" for i in range(triage - half)],
    )
    space.delete(ids=[f"{name}-t{i}" for i in range(0, training, 17)] + [f"{name}-p3"])
    space.compute_priorities(k=5)
    top = space.trigger_retraining(n=10, note="weekly relabel")
    client.set_trigger_status(top.id, "done")
    space.trigger_retraining(n=6, strategy="diverse", where={"dataset": "prod-2026-11"})
    return space


def snapshot(client: Client, name: str) -> dict:
    """Everything a back-up must carry of a space, as the public API reads it."""
    space = client.space(name, metric="cosine")
    rows = space.get(include_embeddings=True)
    triggers = sorted(client.triggers(name)["trigger"], key=lambda t: t.id)
    status = space.priority_status()
    probes = rows["id"].iloc[::37].tolist()
    neighbors = space.nearest_neighbors(ids=probes, k=5)
    return {
        "info": space.info(),
        "rows": rows.drop(columns=["embedding", "output"]),
        "embeddings": np.stack(rows["embedding"]).tobytes(),
        "outputs": [None if o is None else o.tobytes() for o in rows["output"]],
        "priorities": space.priorities(n=None),
        "training_version": (status["training_version"], status["stale"], status["unscored"]),
        "triggers": triggers,
        "items": [client.trigger_items(t.id) for t in triggers],
        "neighbors": neighbors[["query", "rank", "id"]],
        "distances": neighbors["distance"].to_numpy(),
    }


def assert_same(got: dict, expected: dict, renumbered: dict | None = None) -> None:
    assert got["info"] == expected["info"]
    pd.testing.assert_frame_equal(got["rows"], expected["rows"])
    assert got["embeddings"] == expected["embeddings"]
    assert got["outputs"] == expected["outputs"]
    pd.testing.assert_frame_equal(got["priorities"], expected["priorities"])
    assert got["training_version"] == expected["training_version"]
    assert got["training_version"][1:] == (0, 0)
    ids = {int(old): new for old, new in (renumbered or {}).items()}
    moved = [t.__class__(**{**t.__dict__, "id": ids.get(t.id, t.id)}) for t in expected["triggers"]]
    assert got["triggers"] == sorted(moved, key=lambda t: t.id)
    order = np.argsort([ids.get(t.id, t.id) for t in expected["triggers"]], kind="stable")
    for items, want in zip(got["items"], [expected["items"][i] for i in order], strict=True):
        pd.testing.assert_frame_equal(items, want)
    pd.testing.assert_frame_equal(got["neighbors"], expected["neighbors"])
    np.testing.assert_allclose(got["distances"], expected["distances"], rtol=1e-5, atol=1e-6)


def rows_of(root: Path, manifest: dict, name: str) -> pa.Table:
    entry = next(s for s in manifest["spaces"] if s["name"] == name)
    files = [f["path"] for f in entry["files"] if f["kind"] == "rows"]
    return pa.concat_tables(pq.read_table(root / f) for f in files)


# --- round trips ----------------------------------------------------------------------
def test_sqlite_to_clickhouse_to_sqlite_keeps_everything(tmp_path, monkeypatch):
    source = embedded("sqlite", tmp_path / "a", monkeypatch)
    source.batch_rows = 64  # many pages, several files
    fill(source, "pets")
    empty = source.space("empty", metric="ip", model={"note": "no rows yet"})
    emptied = source.space("emptied")
    emptied.add(np.eye(3, dtype=np.float32), dataset="gone")
    emptied.delete(where={"dataset": "gone"})
    expected = snapshot(source, "pets")
    first = source.export_to(tmp_path / "one", rows_per_file=100)

    entry = next(s for s in first["spaces"] if s["name"] == "pets")
    counts = (len(expected["rows"]), len(expected["priorities"]), len(expected["triggers"]))
    assert (entry["rows"], entry["priorities"], entry["triggers"]) == counts
    assert entry["trigger_items"] == sum(len(items) for items in expected["items"])
    assert (entry["dimension"], entry["metric"], entry["model"]) == (DIM, "cosine", MODEL)
    parts = [f["rows"] for f in entry["files"] if f["kind"] == "rows"]
    assert len(parts) == 4 and parts[:3] == [100] * 3 and sum(parts) == entry["rows"]
    assert [s["name"] for s in first["spaces"]] == ["emptied", "empty", "pets"]
    assert first["format_version"] == 1 and first["store"] == "sqlite"

    middle = embedded("clickhouse", tmp_path / "b", monkeypatch)
    summary = middle.import_from(tmp_path / "one")
    assert summary == {
        "spaces": ["emptied", "empty", "pets"], "rows": entry["rows"],
        "priorities": entry["priorities"], "triggers": 2,
        "trigger_items": entry["trigger_items"], "renumbered_triggers": {},
    }  # fmt: skip
    assert_same(snapshot(middle, "pets"), expected)
    assert middle.space("empty", metric="ip").info() == empty.info()
    assert middle.space("emptied").info() == emptied.info()
    assert emptied.info().dim == 3

    second = middle.export_to(tmp_path / "two", spaces="pets")
    assert [s["name"] for s in second["spaces"]] == ["pets"]
    assert rows_of(tmp_path / "two", second, "pets").equals(
        rows_of(tmp_path / "one", first, "pets")
    )
    last = embedded("sqlite", tmp_path / "c", monkeypatch)
    last.import_from(tmp_path / "two")
    assert_same(snapshot(last, "pets"), expected)
    assert list(last.spaces()["name"]) == ["pets"]
    for client in (source, middle, last):
        client.close()


def test_sqlite_to_clickhouse_to_sqlite_over_http(servers, tmp_path):
    name = f"http_{uuid.uuid4().hex[:8]}"
    sqlite, clickhouse = Client(servers("sqlite").url), Client(servers("clickhouse").url)
    sqlite.batch_rows = clickhouse.batch_rows = 100
    fill(sqlite, name, seed=1)
    expected = snapshot(sqlite, name)
    sqlite.export_to(tmp_path / "one", spaces=[name])

    # the servers are shared with other tests, whose triggers may hold the same ids
    moved = clickhouse.import_from(tmp_path / "one")["renumbered_triggers"].get(name)
    assert_same(snapshot(clickhouse, name), expected, moved)
    clickhouse.export_to(tmp_path / "two", spaces=name)
    clickhouse.delete_space(name)

    sqlite.delete_space(name)
    back = sqlite.import_from(tmp_path / "two")["renumbered_triggers"].get(name)
    # ids the ClickHouse server gave, mapped on to the ones the SQLite server gives now
    ids = {int(k): v for k, v in (moved or {}).items()}
    chain = {
        str(old): (back or {}).get(str(ids.get(old, old)), ids.get(old, old))
        for old in (t.id for t in expected["triggers"])
    }
    assert_same(snapshot(sqlite, name), expected, chain)
    sqlite.delete_space(name)


def test_restored_priorities_are_not_recomputed_by_the_refresh(tmp_path, monkeypatch):
    source = embedded("sqlite", tmp_path / "a", monkeypatch)
    fill(source, "pets", training=60, triage=20)
    before = source.space("pets", metric="cosine").priorities(n=None)
    source.export_to(tmp_path / "out")

    target = embedded("sqlite", tmp_path / "b", monkeypatch, CHROMA_PRIORITY_REFRESH_SECONDS="600")
    target.import_from(tmp_path / "out")
    # the labelled training rows restored set off a refresh: run it now, scores restored
    jobs = target._transport.chroma.context.existing_state("algo_priority")
    (timer,) = jobs.timers.values()
    timer.cancel()
    timer.function(*timer.args)
    space = target.space("pets", metric="cosine")
    assert space.priority_status()["job"] is None
    pd.testing.assert_frame_equal(space.priorities(n=None), before)


def test_an_imported_trigger_whose_id_is_taken_gets_a_new_one(tmp_path, monkeypatch):
    source = embedded("sqlite", tmp_path / "a", monkeypatch)
    fill(source, "pets", training=60, triage=20)
    expected = snapshot(source, "pets")
    source.export_to(tmp_path / "out")

    target = embedded("clickhouse", tmp_path / "b", monkeypatch)
    other = fill(target, "other", seed=3, training=60, triage=20)
    taken = set(target.triggers()["id"])
    summary = target.import_from(tmp_path / "out")
    moved = summary["renumbered_triggers"]["pets"]
    assert {int(k) for k in moved} == taken & {t.id for t in expected["triggers"]}
    assert not set(moved.values()) & taken
    assert_same(snapshot(target, "pets"), expected, moved)
    assert len(target.triggers("other")) == 2 and other.count() == 75


def test_export_and_import_take_one_space_by_name(tmp_path, monkeypatch):
    source = embedded("sqlite", tmp_path / "a", monkeypatch)
    for name in ("a", "b", "c"):
        source.space(name).add(np.eye(4, dtype=np.float32), dataset="d", ids=list("wxyz"))
    manifest = source.export_to(tmp_path / "out", spaces=["c", "a"])
    assert [s["name"] for s in manifest["spaces"]] == ["c", "a"]

    target = embedded("sqlite", tmp_path / "b", monkeypatch)
    assert target.import_from(tmp_path / "out", spaces="a")["spaces"] == ["a"]
    assert list(target.spaces()["name"]) == ["a"]
    with pytest.raises(NotFound, match="'b'"):
        target.import_from(tmp_path / "out", spaces=["b"])
    with pytest.raises(NotFound, match="nowhere"):
        source.export_to(tmp_path / "other", spaces="nowhere")
    assert not (tmp_path / "other").exists()


# --- refusals -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A back-up of two spaces, made once; tests damage copies of it."""
    root = tmp_path_factory.mktemp("backup")
    client = Client(path=root / "data")
    fill(client, "first", training=60, triage=20)
    fill(client, "second", seed=2, training=60, triage=20)
    client.export_to(root / "out", rows_per_file=40)
    client.close()
    return root / "out"


def copy_of(exported: Path, tmp_path: Path) -> tuple[Path, dict]:
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(exported, root)
    return root, json.loads((root / "manifest.json").read_text())


def save(root: Path, manifest: dict) -> None:
    (root / "manifest.json").write_text(json.dumps(manifest))


def entry_of(manifest: dict, name: str, kind: str, number: int = 0) -> dict:
    space = next(s for s in manifest["spaces"] if s["name"] == name)
    return [f for f in space["files"] if f["kind"] == kind][number]


def flip_byte(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


def flip_vector_byte(path: Path) -> None:
    """Damage a byte in the middle of the embeddings' first data page."""
    chunk = next(
        column
        for column in (pq.ParquetFile(path).metadata.row_group(0).column(i) for i in range(10))
        if column.path_in_schema.startswith("embedding")
    )
    data = bytearray(path.read_bytes())
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data[start + chunk.total_compressed_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def rehash(root: Path, item: dict) -> None:
    """Make the manifest agree with a file damaged before its checksum was taken."""
    import hashlib

    data = (root / item["path"]).read_bytes()
    item["bytes"], item["sha256"] = len(data), hashlib.sha256(data).hexdigest()


def damage_checksum(root, manifest):
    flip_byte(root / entry_of(manifest, "second", "rows", 1)["path"])
    return "checksum"


def damage_truncate(root, manifest):
    item = entry_of(manifest, "second", "priorities")
    path = root / item["path"]
    path.write_bytes(path.read_bytes()[: item["bytes"] // 2])
    rehash(root, item)
    return "not a readable Parquet file"


def damage_missing(root, manifest):
    (root / entry_of(manifest, "second", "trigger_items")["path"]).unlink()
    return "missing"


def damage_version(root, manifest):
    manifest["format_version"] = 2
    return "format version 2"


def damage_format(root, manifest):
    manifest["format"] = "something-else"
    return "not the manifest"


def damage_count(root, manifest):
    item = entry_of(manifest, "second", "rows", 0)
    item["rows"] += 1
    next(s for s in manifest["spaces"] if s["name"] == "second")["rows"] += 1
    return "holds 40 rows, the manifest counts 41"


def damage_sum(root, manifest):
    next(s for s in manifest["spaces"] if s["name"] == "second")["priorities"] += 1
    return "priorities files hold"


def damage_dimension(root, manifest):
    next(s for s in manifest["spaces"] if s["name"] == "second")["dimension"] = DIM + 1
    return "column embedding"


def damage_outside(root, manifest):
    entry_of(manifest, "second", "triggers")["path"] = "../../triggers.parquet"
    return "outside"


def damage_items(root, manifest):
    """Triggers that disagree with their items: counts swapped, checksums made to agree."""
    item = entry_of(manifest, "second", "triggers")
    table = pq.read_table(root / item["path"])
    counts = table.column("count").to_pylist()
    at = table.schema.get_field_index("count")
    table = table.set_column(at, "count", pa.array(counts[::-1], pa.int64()))
    pq.write_table(table, root / item["path"])
    rehash(root, item)
    return "trigger by trigger"


DAMAGE = [
    damage_checksum, damage_truncate, damage_missing, damage_version, damage_format,
    damage_count, damage_sum, damage_dimension, damage_outside, damage_items,
]  # fmt: skip


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda d: d.__name__.removeprefix("damage_"))
def test_a_damaged_back_up_is_refused_before_anything_is_written(
    exported, tmp_path, monkeypatch, damage
):
    root, manifest = copy_of(exported, tmp_path)
    message = damage(root, manifest)
    save(root, manifest)
    target = embedded("sqlite", tmp_path / "data", monkeypatch)
    with pytest.raises(InvalidBackup, match=message):
        target.import_from(root)
    assert target.spaces().empty


def test_a_directory_without_a_manifest_is_not_a_back_up(exported, tmp_path, monkeypatch):
    root, manifest = copy_of(exported, tmp_path)
    (root / "manifest.json").unlink()
    target = embedded("sqlite", tmp_path / "data", monkeypatch)
    with pytest.raises(InvalidBackup, match="no manifest.json"):
        target.import_from(root)
    assert target.spaces().empty


@pytest.mark.parametrize("store", ["sqlite", "clickhouse"])
def test_a_file_damaged_before_its_checksum_was_taken_rolls_the_import_back(
    exported, tmp_path, monkeypatch, store
):
    # the second space's last rows file passes every check that reads no data, and its
    # pages fail their checksums only when read: after the first space is written
    root, manifest = copy_of(exported, tmp_path)
    item = entry_of(manifest, "second", "rows", 1)
    flip_vector_byte(root / item["path"])
    rehash(root, item)
    save(root, manifest)
    target = embedded(store, tmp_path / "data", monkeypatch)
    calls: list[tuple[str, str | None]] = []
    send = target._call

    def spy(op, params=None, table=None):
        calls.append((op, (params or {}).get("space")))
        return send(op, params, table)

    target._call = spy  # type: ignore[method-assign]
    with pytest.raises(InvalidBackup, match="cannot be read"):
        target.import_from(root, progress=False)
    # the first space went in whole and was taken out again with what of the second went in
    assert ("restore_trigger", "first") in calls and ("restore_rows", "second") in calls
    assert calls[-2:] == [("delete_space", "second"), ("delete_space", "first")]
    assert target.spaces().empty
    assert target.triggers().empty
    # nothing is left behind that would stop a good back-up from going in
    target.import_from(exported)
    assert sorted(target.spaces()["name"]) == ["first", "second"]


def test_an_existing_space_is_a_conflict_and_nothing_is_imported(exported, tmp_path, monkeypatch):
    target = embedded("sqlite", tmp_path / "data", monkeypatch)
    target.space("second").add(np.ones((2, 3), np.float32), dataset="mine")
    with pytest.raises(Conflict, match="'second'"):
        target.import_from(exported)
    assert list(target.spaces()["name"]) == ["second"]
    assert target.space("second").count() == 2
    assert target.import_from(exported, spaces="first")["rows"] == 75


def test_export_wants_a_new_or_empty_directory(tmp_path, monkeypatch):
    client = embedded("sqlite", tmp_path / "data", monkeypatch)
    client.space("s").add(np.eye(3, dtype=np.float32), dataset="d")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="not empty"):
        client.export_to(tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    assert client.export_to(tmp_path / "empty")["spaces"][0]["rows"] == 3
    with pytest.raises(InvalidInput, match="rows_per_file"):
        client.export_to(tmp_path / "other", rows_per_file=0)


# --- the operations under the client, on each store and transport -----------------------
def test_restore_operations_check_what_they_are_sent(client, space_name):
    client._call("restore_space", {"space": space_name, "metric": "l2", "model": {}})
    with pytest.raises(Conflict, match=space_name):
        client._call("restore_space", {"space": space_name, "metric": "l2"})
    rows = pa.table(
        {
            "seq": pa.array([5, 3], pa.int64()),
            "id": ["a", "b"],
            "dataset": ["d", "d"],
            "context": ["training", "training"],
            "embedding": pa.array([[1.0, 2.0], [3.0, 4.0]], pa.list_(pa.float32(), 2)),
        }
    )
    with pytest.raises(InvalidInput, match="increase"):
        client._call("restore_rows", {"space": space_name}, rows)
    with pytest.raises(InvalidInput, match="seq column"):
        client._call("restore_rows", {"space": space_name}, rows.drop_columns(["seq"]))
    ordered = rows.set_column(0, "seq", pa.array([3, 5], pa.int64()))
    assert client._call("restore_rows", {"space": space_name}, ordered)[0]["count"] == 2
    scores = pa.table({"id": ["a", "a"], "priority": [0.5, 0.6]})
    with pytest.raises(InvalidInput, match="more than one score"):
        client._call("restore_priorities", {"space": space_name}, scores)
    with pytest.raises(NotFound, match="'zz'"):
        client._call("restore_priorities", {"space": space_name}, scores.slice(0, 1).set_column(
            0, "id", pa.array(["zz"])))  # fmt: skip
    trigger = {"id": 5, "status": "done", "count": 2, "selection": {}, "deliveries": {}}
    items = pa.table({"id": ["a"], "priority": [0.5]})
    with pytest.raises(InvalidInput, match="counts 2 items"):
        client._call("restore_trigger", {"space": space_name, "trigger": trigger}, items)
    with pytest.raises(InvalidInput, match="status"):
        client._call(
            "restore_trigger", {"space": space_name, "trigger": {**trigger, "status": "x"}}, items
        )
    assert client.space(space_name).count() == 2
    assert client.triggers(space_name).empty
    page = client._call("export_rows", {"space": space_name, "after_seq": 3, "limit": 10})
    assert page[0]["max_seq"] == 5 and page[1].column("id").to_pylist() == ["b"]
    client.delete_space(space_name)


SCORES = pa.table({"id": ["a", "b"], "priority": [0.5, 0.25], "components": ['{"x": 1}', None]})
TRIGGER = {"id": 3, "status": "done", "count": 1, "created_at": "2024-05-01T12:00:00+00:00"}
REFUSED = {
    "seqs not increasing": lambda: restore.check_seqs(pa.chunked_array([[3, 3]])),
    "seqs beyond int64": lambda: restore.check_seqs(pa.chunked_array([[2**63]], pa.uint64())),
    "the last int64 seq": lambda: restore.check_seqs(pa.chunked_array([[1, 2**63 - 1]])),
    "a seq beyond 2^53 - 1": lambda: restore.check_seqs(pa.chunked_array([[2**53]])),
    "seqs as text": lambda: restore.check_seqs(pa.chunked_array([["1"]])),
    "scores not a table": lambda: restore.check_scores({"id": ["a"]}),
    "scores without priority": lambda: restore.check_scores(SCORES.drop_columns(["priority"])),
    "a NaN priority": lambda: restore.check_scores(
        SCORES.set_column(1, "priority", pa.array([0.5, float("nan")]))
    ),
    "components not an object": lambda: restore.check_scores(
        SCORES.set_column(2, "components", pa.array(["[1]", None]))
    ),
    "components not JSON": lambda: restore.check_scores(
        SCORES.set_column(2, "components", pa.array(["{", None]))
    ),
    "an empty id": lambda: restore.check_scores(SCORES.set_column(0, "id", pa.array(["a", ""]))),
    "an id too long": lambda: restore.check_scores(
        SCORES.set_column(0, "id", pa.array(["a", "x" * 513]))
    ),
    "a trigger id of 0": lambda: restore.check_trigger({**TRIGGER, "id": 0}),
    "a trigger time that is no time": lambda: restore.check_trigger(
        {**TRIGGER, "created_at": "yesterday"}
    ),
    "a selection that is no dict": lambda: restore.check_trigger({**TRIGGER, "selection": [1]}),
    "items without ids": lambda: restore.check_items(pa.table({"priority": [1.0]})),
    "items with numeric labels": lambda: restore.check_items(pa.table({"id": ["a"], "label": [3]})),
    "items with text priorities": lambda: restore.check_items(
        pa.table({"id": ["a"], "priority": ["high"]})
    ),
}


@pytest.mark.parametrize("call", REFUSED.values(), ids=REFUSED.keys())
def test_what_a_restore_sends_is_checked(call):
    with pytest.raises(InvalidInput):
        call()


def test_what_a_restore_sends_comes_out_in_the_stores_shape():
    scores = restore.check_scores(SCORES.select(["priority", "id"]))
    assert scores.column_names == ["id", "priority", "components", "computed_at"]
    assert scores.column("components").null_count == 2
    items = restore.check_items(pa.table({"id": ["a"], "priority": pa.array([1], pa.int8())}))
    assert items.schema.field("priority").type == pa.float64()
    assert restore.check_trigger(TRIGGER) == {
        **TRIGGER, "updated_at": None, "note": None, "selection": {}, "deliveries": {},
    }  # fmt: skip
    assert restore.check_seqs(pa.chunked_array([[1, 5]], pa.uint64())).tolist() == [1, 5]


# --- an import is all or nothing, across crashes -----------------------------------------
@pytest.mark.parametrize("store", STORES)
def test_a_restore_never_finished_is_removed_when_the_store_opens_again(
    store, tmp_path, monkeypatch, caplog
):
    client = embedded(store, tmp_path, monkeypatch)
    client._call("restore_space", {"space": "half", "metric": "l2", "dim": 2})
    client._call("restore_space", {"space": "whole", "metric": "l2", "dim": 2})
    rows = pa.table(
        {
            "seq": pa.array([1, 2], pa.int64()),
            "id": ["a", "b"],
            "dataset": ["d", "d"],
            "context": ["training", "training"],
            "embedding": pa.array([[1.0, 2.0], [3.0, 4.0]], pa.list_(pa.float32(), 2)),
        }
    )
    for name in ("half", "whole"):
        client._call("restore_rows", {"space": name}, rows)
    client._call("restore_finish", {"space": "whole"})
    client._call("restore_finish", {"space": "whole"})  # a second time changes nothing
    client.close()  # as a server stops before the import of "half" finished

    again = embedded(store, tmp_path, monkeypatch)
    try:
        assert again.spaces()["name"].tolist() == ["whole"]
        assert again.space("whole").count() == 2
        assert "'half' was being imported when Chroma last stopped" in caplog.text
        # a space made under the name afterwards is a space like any other
        again.space("half").add(np.ones((1, 2), np.float32))
    finally:
        again.close()
    caplog.clear()
    third = embedded(store, tmp_path, monkeypatch)
    try:
        assert sorted(third.spaces()["name"]) == ["half", "whole"]
        assert "was being imported" not in caplog.text
    finally:
        third.close()


@pytest.mark.parametrize("store", STORES)
def test_a_server_killed_during_an_import_keeps_nothing_of_it(store, tmp_path, monkeypatch):
    source = embedded("sqlite", tmp_path / "source", monkeypatch)
    rng = np.random.default_rng(5)
    n = 60_000
    source.space("big").add(
        rng.standard_normal((n, DIM)).astype(np.float32), ids=[f"r{i}" for i in range(n)]
    )
    source.export_to(tmp_path / "backup")
    source.close()

    server = Server(tmp_path / "data", env={"CHROMA_STORE": store})
    outcome: dict = {}

    def run() -> None:
        try:
            Client(server.url, retries=0, batch_rows=500).import_from(tmp_path / "backup")
        except ChromaError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    watcher = Client(server.url, retries=0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if watcher._call("space_info", {"space": "big"})[0]["space"]["count"]:
                break
        except NotFound:
            pass
        time.sleep(0.005)
    server.kill()
    thread.join(60)
    error = outcome["error"]
    assert isinstance(error, ConnectionFailed)
    assert "'big' are removed when the server starts again" in str(error)

    again = Server(tmp_path / "data", env={"CHROMA_STORE": store}, port=server.port)
    try:
        client = Client(again.url)
        assert client.spaces().empty
        assert "'big' was being imported when Chroma last stopped" in again.log.read_text()
        assert client.import_from(tmp_path / "backup")["rows"] == n
        assert client.space("big").count() == n
    finally:
        again.stop()
