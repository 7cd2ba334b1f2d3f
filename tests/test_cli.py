"""The ``chroma`` console script, run as a subprocess on files the tests write, embedded
and against a real server; what it stored is read back through the client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from chroma_client import Client
from tests.conftest import Server, free_port

CHROMA = Path(sys.executable).with_name("chroma")
DIM = 6


def chroma(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``chroma`` with no CHROMA_* variable but those in ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHROMA_")}
    return subprocess.run(
        [str(CHROMA), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
    )


def ok(*args, env: dict | None = None) -> str:
    done = chroma(*args, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def fails(*args, status: int = 1, env: dict | None = None) -> str:
    """The one line a failing command prints on stderr."""
    done = chroma(*args, env=env)
    assert done.returncode == status, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chroma: error: "), done.stderr
    return lines[0]


def vectors(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def stored(client: Client, space: str) -> pd.DataFrame:
    return client.space(space).get(include_embeddings=True).set_index("id")


# --- load, one format at a time ------------------------------------------------------
def _parquet(directory: Path):
    x = vectors(250, 1)
    table = pa.table(
        {
            "id": [f"p{i}" for i in range(250)],
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), DIM),
            "label": (x[:, 0] > 0).astype(np.int64),
            "confidence": np.linspace(0, 1, 250),
            "camera": ["front", "back"] * 125,
            "uri": [f"s3://b/{i}.jpg" for i in range(250)],
        }
    )
    path = directory / "train.parquet"
    pq.write_table(table, path, row_group_size=70)  # row groups across batch boundaries
    args = ["--dataset", "pets", "--input-uri-column", "uri", "--metadata-column", "confidence"]
    return path, args + ["--metadata-column", "cam*", "--batch-rows", "100"], x


def _feather(directory: Path):
    x = vectors(40, 2)
    probs = np.random.default_rng(3).dirichlet([1, 1, 1], size=40).astype(np.float32)
    table = pa.table(
        {
            "key": [f"f{i}" for i in range(40)],
            "vec": pa.array([list(v) for v in x], pa.list_(pa.float32())),
            "pred": np.arange(40) % 3,
            "probs": pa.array([list(p) for p in probs]),
            "where": ["week-1"] * 20 + ["week-2"] * 20,
        }
    )
    path = directory / "prod.feather"
    feather.write_feather(table, path)
    args = ["--embedding-column", "vec", "--id-column", "key", "--inference-column", "pred"]
    args += ["--outputs-column", "probs", "--dataset-column", "where", "--context", "triage"]
    return path, args, x


def _csv_fixed(directory: Path):
    x = vectors(30, 4)
    frame = pd.DataFrame(x, columns=[f"e_{i}" for i in range(DIM)])
    frame.insert(0, "id", [f"c{i}" for i in range(30)])
    frame["label"] = ["cat", "dog", "007"] * 10
    path = directory / "fixed.csv"
    frame.to_csv(path, index=False)
    return path, ["--embedding-columns", "e_", "--dataset", "csv"], x


def _csv_lists(directory: Path):
    x = vectors(20, 5)
    frame = pd.DataFrame({"id": [f"l{i}" for i in range(20)], "context": "triage"})
    frame["embedding"] = [json.dumps([float(v) for v in row]) for row in x]
    path = directory / "lists.csv"
    frame.to_csv(path, index=False)
    return path, ["--dataset", "csv-lists"], x


def _npy(directory: Path):
    x = vectors(25, 6)
    path = directory / "plain.npy"
    np.save(path, x.astype(np.float64))
    return path, ["--dataset", "npy", "--batch-rows", "10"], x


def _npz(directory: Path):
    x = vectors(15, 7)
    path = directory / "archive.npz"
    np.savez(path, vectors=x, ids=np.array([f"z{i}" for i in range(15)]), labels=np.arange(15))
    args = ["--embedding-column", "vectors", "--id-column", "ids", "--label-column", "labels"]
    return path, args + ["--dataset", "npz"], x


FORMATS = {
    "parquet": _parquet,
    "feather": _feather,
    "csv-fixed": _csv_fixed,
    "csv-lists": _csv_lists,
    "npy": _npy,
    "npz": _npz,
}


@pytest.mark.parametrize("kind", FORMATS)
def test_load_stores_every_row_of_each_format(tmp_path, kind):
    path, args, x = FORMATS[kind](tmp_path)
    data = tmp_path / "data"
    out = ok("load", "s", path, *args, "--path", data)
    assert f"loaded {len(x):,} rows from 1 file into 's' (new space)" in out
    assert f"'s' holds {len(x):,} rows" in out
    client = Client(path=data)
    rows = client.space("s").get(include_embeddings=True)
    assert len(rows) == len(x)
    order = np.argsort([int(i[1:]) for i in rows["id"]]) if kind != "npy" else np.arange(len(x))
    np.testing.assert_allclose(np.stack(rows["embedding"])[order], x, rtol=1e-6)
    rows = rows.set_index("id")
    if kind == "parquet":
        assert rows.loc["p3", "dataset"] == "pets" and rows.loc["p3", "context"] == "training"
        assert rows.loc["p3", "input_uri"] == "s3://b/3.jpg"
        assert rows.loc["p3", "label"] == str(int(x[3, 0] > 0))
        assert rows.loc["p3", "metadata"] == {
            "confidence": pytest.approx(3 / 249),
            "camera": "back",
        }
    if kind == "feather":
        assert rows.loc["f25", "dataset"] == "week-2" and rows.loc["f25", "context"] == "triage"
        assert rows.loc["f25", "inference"] == "1" and len(rows.loc["f25", "output"]) == 3
    if kind == "csv-fixed":
        assert rows.loc["c2", "label"] == "007"  # read as text, not the number 7
    if kind == "csv-lists":
        assert set(rows["context"]) == {"triage"}
    if kind == "npz":
        assert rows.loc["z4", "label"] == "4"
    client.close()


def test_load_several_files_json_summary_stats_and_spaces(tmp_path):
    data = tmp_path / "data"
    first, args, x = _parquet(tmp_path)
    table = pq.read_table(first)
    second = tmp_path / "more.parquet"
    pq.write_table(table.set_column(0, "id", pa.array([f"q{i}" for i in range(250)])), second)
    summary = json.loads(
        ok("load", "s", first, second, *args, "--metric", "cosine", "--json", "--path", data)
    )
    assert summary["rows"] == 500 and summary["files"] == 2 and summary["space_count"] == 500
    assert summary["created"] is True and summary["seconds"] > 0
    listed = json.loads(ok("spaces", "--json", "--path", data))
    assert listed == [
        {
            "name": "s",
            "metric": "cosine",
            "dim": DIM,
            "count": 500,
            "model": {},
            "created_at": listed[0]["created_at"],
        }
    ]
    assert ok("spaces", "--path", data).splitlines()[1].split()[:4] == ["s", "cosine", "6", "500"]
    stats = json.loads(ok("stats", "s", "--json", "--path", data))
    positives = int((x[:, 0] > 0).sum()) * 2
    assert stats["rows"] == 500 and stats["dim"] == DIM and stats["metric"] == "cosine"
    assert stats["counts"]["dataset"] == {"pets": 500}
    assert stats["counts"]["label"] == {"1": positives, "0": 500 - positives}
    assert stats["index"]["indexed"] + stats["index"]["pending"] == 500
    text = ok("stats", "s", "--path", data)
    assert "metric: cosine" in text and "by dataset:" in text
    assert any(line.split() == ["500", "pets"] for line in text.splitlines())


# --- against a server ------------------------------------------------------------------
@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A server with a space of labelled training rows and triage rows to score."""
    server = Server(tmp_path_factory.mktemp("cli-server") / "data")
    client = Client(server.url)
    space = client.space("scored")
    train = vectors(200, 10)
    space.add(
        train,
        dataset="train",
        labels=(train[:, 0] > 0).astype(int),
        ids=[f"t{i}" for i in range(200)],
    )
    space.add(vectors(60, 11), dataset="prod", context="triage", ids=[f"u{i}" for i in range(60)])
    yield server, client
    client.close()
    server.stop()


def test_priorities_and_neighbors_match_the_client(scored):
    server, client = scored
    url = ("--url", server.url)
    listed = json.loads(ok("priorities", "scored", "-n", "5", "--compute", "--json", *url))
    top = client.space("scored").priorities(n=5)
    assert client.space("scored").priority_status()["scored"] == 60
    assert [row["id"] for row in listed] == top["id"].tolist()
    assert [row["priority"] for row in listed] == pytest.approx(top["priority"].tolist())
    text = ok("priorities", "scored", "-n", "5", *url).splitlines()
    # the components that make the priority are shown; those that do not vote are not
    assert text[0].split()[:5] == ["id", "priority", "support", "probe_support", "novelty"]
    assert "distance_pct" not in text[0] and "mahalanobis_pct" not in text[0]
    highest = top["priority"].iloc[0]
    above = ok("priorities", "scored", "--min-priority", "1.01", *url).strip()
    assert above == f"no scored input reaches --min-priority 1.01 (the highest is {highest:.3f})"
    nowhere = json.dumps({"dataset": "nowhere"})
    assert ok("priorities", "scored", "--where", nowhere, *url).strip() == (
        "no scored input matches --where"
    )
    assert [line.split()[0] for line in text[1:]] == top["id"].tolist()
    where = json.dumps({"id": {"$in": ["u1", "u2"]}})
    assert {
        r["id"] for r in json.loads(ok("priorities", "scored", "--where", where, "--json", *url))
    } == {"u1", "u2"}

    near = client.space("scored").nearest_neighbors(ids=["u3"], k=4)
    found = json.loads(ok("neighbors", "scored", "--id", "u3", "-k", "4", "--json", *url))
    assert [r["id"] for r in found] == near["id"].tolist()
    assert [r["distance"] for r in found] == pytest.approx(near["distance"].tolist())
    text = ok("neighbors", "scored", "--id", "u3", "-k", "4", *url, env={"CHROMA_URL": "x"})
    assert [line.split()[1] for line in text.splitlines()[1:]] == near["id"].tolist()


def test_trigger_and_triggers(scored):
    server, client = scored
    env = {"CHROMA_URL": server.url}
    client.space("scored").compute_priorities(only_new=True)
    made = json.loads(ok("trigger", "scored", "-n", "4", "--note", "weekly", "--json", env=env))
    assert made["count"] == 4 and made["note"] == "weekly" and made["space"] == "scored"
    items = client.trigger_items(made["id"])
    assert items["id"].tolist() == client.space("scored").priorities(n=4)["id"].tolist()
    diverse = json.loads(
        ok("trigger", "scored", "-n", "3", "--strategy", "diverse", "--json", env=env)
    )
    assert diverse["selection"]["strategy"] == "diverse" and diverse["count"] == 3
    listed = json.loads(ok("triggers", "scored", "--json", env=env))
    assert [t["id"] for t in listed] == [diverse["id"], made["id"]]
    text = ok("triggers", env=env).splitlines()
    assert text[0].split()[:5] == ["id", "space", "status", "count", "labelled"]
    assert text[2].split()[:6] == [str(made["id"]), "scored", "pending", "4", "0/4",
                                   "top_priority"]  # fmt: skip
    assert listed[1]["labelled"] == 0 and listed[1]["count"] == 4
    text = ok("trigger", "scored", "-n", "2", env=env).splitlines()
    assert "count: 2" in text and "status: pending" in text and "  manifest:" in text


def test_rules_add_list_fire_and_remove(scored):
    server, client = scored
    env = {"CHROMA_URL": server.url}
    space = client.space("ruled")
    train = vectors(100, 30)
    space.add(train, dataset="train", labels=(train[:, 0] > 0).astype(int))
    space.add(vectors(30, 31), dataset="prod", context="triage", ids=[f"r{i}" for i in range(30)])
    space.compute_priorities()
    made = json.loads(
        ok(
            "rules",
            "add",
            "ruled",
            "weekly",
            "--when",
            "schedule",
            "-n",
            "4",
            "--every",
            "1w",
            "--strategy",
            "diverse",
            "--json",
            env=env,
        )  # fmt: skip
    )
    assert made["every"] == 604_800 and made["n"] == 4 and made["strategy"] == "diverse"
    deadline = time.monotonic() + 30
    while client.triggers(space="ruled").empty and time.monotonic() < deadline:
        time.sleep(0.1)
    (fired,) = client.triggers(space="ruled")["trigger"]
    assert fired.selection["rule"]["name"] == "weekly" and fired.count == 4
    listed = json.loads(ok("rules", "list", "ruled", "--json", env=env))
    assert [(r["name"], r["fired"], r["last_trigger"]) for r in listed] == [("weekly", 1, fired.id)]
    text = ok("rules", "list", "ruled", env=env).splitlines()
    assert text[0].split()[:3] == ["name", "when", "n"]
    assert text[1].split()[:3] == ["weekly", "schedule", "4"]
    # the flags a kind needs, named as flags
    line = fails("rules", "add", "ruled", "x", "--when", "priority", "-n", "5", status=2, env=env)
    assert "--when priority needs --min-priority" in line
    line = fails("rules", "add", "ruled", "x", "--when", "schedule", "-n", "5", "--every",
                 "soon", status=2, env=env)  # fmt: skip
    assert "'soon' is not a duration" in line
    line = fails("rules", "add", "ruled", "weekly", "--when", "schedule", "-n", "5", "--every",
                 "1d", env=env)  # fmt: skip
    assert "already holds a trigger rule named 'weekly'" in line
    assert "weekly" in ok("rules", "remove", "ruled", "weekly", env=env)
    assert ok("rules", "list", "ruled", env=env).strip() == "no trigger rules"
    assert "no trigger rule named 'weekly'" in fails("rules", "remove", "ruled", "weekly", env=env)


def test_watch_prints_new_scored_inputs_and_resumes_after_a_position(scored):
    server, client = scored
    env = {"CHROMA_URL": server.url}
    space = client.space("watched")
    train = vectors(100, 40)
    space.add(train, dataset="train", labels=(train[:, 0] > 0).astype(int))
    space.add(vectors(5, 41), dataset="prod", context="triage", ids=[f"w{i}" for i in range(5)])
    space.compute_priorities()
    lines = ok("watch", "watched", "--after", "0:0", "--timeout", "1", "--json", env=env)
    events = [json.loads(line) for line in lines.splitlines()]
    assert [e["input"]["id"] for e in events] == [f"w{i}" for i in range(5)]
    scores = space.priorities(n=None).set_index("id")["priority"]
    assert [e["input"]["priority"] for e in events] == pytest.approx(
        [scores[f"w{i}"] for i in range(5)]
    )
    after = events[2]["position"]
    text = ok("watch", "watched", "--after", after, "--timeout", "0.5", env=env).splitlines()
    assert [line.split()[:2] for line in text] == [["input", "w3"], ["input", "w4"]]
    assert text[-1].endswith(f"position={events[4]['position']}")
    line = fails("watch", "watched", "--after", "yesterday", "--timeout", "1", env=env)
    assert "after must be a position a watch returned" in line


def test_load_against_a_server_and_undo_on_failure(scored, tmp_path):
    server, client = scored
    x = vectors(500, 20)
    ids = [f"n{i}" for i in range(500)]
    ids[350] = "t150"  # already stored
    path = tmp_path / "clash.parquet"
    pq.write_table(pa.table({"id": ids, "embedding": list(x)}), path)
    before = client.space("scored").count()
    line = fails(
        "load", "scored", path, "--dataset", "new", "--batch-rows", "100", "--url", server.url
    )
    assert "clash.parquet: rows 300-399" in line and "t150" in line
    assert "the 300 rows it had stored were removed" in line
    assert client.space("scored").count() == before
    assert client.space("scored").count(where={"dataset": "new"}) == 0
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"embedding": list(x[:120])}), good)
    summary = json.loads(ok("load", "fresh", good, "--dataset", "d", "--json", "--url", server.url))
    assert summary["rows"] == 120 and client.space("fresh").count() == 120


def test_export_from_a_server_and_import_into_a_directory(scored, tmp_path):
    server, client = scored
    space = client.space("scored")
    space.compute_priorities(only_new=True)
    made = space.trigger_retraining(n=3, note="to keep")
    backup = tmp_path / "backup"
    manifest = json.loads(ok("export", backup, "scored", "--json", "--url", server.url))
    assert [s["name"] for s in manifest["spaces"]] == ["scored"]
    assert (backup / "manifest.json").is_file()
    text = ok("export", tmp_path / "again", "scored", "--url", server.url)
    assert text.splitlines()[-1] == f"exported 1 space(s) to {tmp_path / 'again'}"

    data = tmp_path / "restored"
    summary = json.loads(ok("import", backup, "--json", "--path", data))
    assert summary["spaces"] == ["scored"] and summary["rows"] == space.count()
    with Client(path=data) as restored:
        back = restored.space("scored")
        assert back.count() == space.count()
        original, copy = stored(client, "scored"), stored(restored, "scored")
        assert np.array_equal(
            np.stack(copy.loc[original.index, "embedding"]), np.stack(original["embedding"])
        )
        assert back.priorities(n=None)["id"].tolist() == space.priorities(n=None)["id"].tolist()
        assert restored.trigger_items(made.id)["id"].tolist() == (
            client.trigger_items(made.id)["id"].tolist()
        )
    # the space is there now: importing it again is refused, and changes nothing
    line = fails("import", backup, "--path", data)
    assert "scored" in line and "already exist" in line
    fails("import", tmp_path / "missing", "--path", data, status=2)


# --- bad input stores nothing ----------------------------------------------------------
def test_bad_files_give_one_clear_line_and_store_nothing(tmp_path):
    data = tmp_path / "data"
    client = Client(path=data)
    client.space("kept").add(vectors(10, 30), dataset="d", ids=[f"k{i}" for i in range(10)])
    client.close()
    x = vectors(1000, 31)
    nan = x.copy()
    nan[550, 2] = np.nan
    pq.write_table(pa.table({"embedding": list(nan)}), tmp_path / "nan.parquet")
    pq.write_table(pa.table({"embedding": list(x)}), tmp_path / "good.parquet")
    pq.write_table(pa.table({"embedding": list(vectors(5, 32, dim=4))}), tmp_path / "dim4.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    (tmp_path / "short.csv").write_text('embedding\n"[1, 2, 3, 4, 5, 6]"\n"[1, 2]"\n')
    where = ("--path", data, "--dataset", "bad", "--batch-rows", "100")

    line = fails("load", "kept", tmp_path / "nan.parquet", *where)
    assert "nan.parquet: row 550: the embedding holds NaN" in line
    assert "the 500 rows it had stored were removed" in line
    line = fails("load", "fresh", tmp_path / "nan.parquet", *where)
    assert "the space 'fresh' this load created was dropped" in line
    # checked before anything is written: the good first file is not loaded either
    line = fails("load", "kept", tmp_path / "good.parquet", tmp_path / "dim4.parquet", *where)
    assert "different dimensions" in line and "dim4.parquet 4" in line
    line = fails("load", "kept", tmp_path / "good.parquet", tmp_path / "broken.parquet", *where)
    assert "broken.parquet: cannot read it as parquet" in line
    line = fails("load", "kept", tmp_path / "good.parquet", "--label-column", "nope", *where)
    assert "no column 'nope' for --label-column" in line
    line = fails("load", "kept", tmp_path / "short.csv", *where)
    assert "short.csv: row 1: the embedding has 2 values, row 0 has 6" in line

    client = Client(path=data)
    assert client.spaces()["name"].tolist() == ["kept"]
    assert client.space("kept").count() == 10
    client.close()


def test_usage_and_connection_errors(tmp_path):
    assert "is not valid JSON" in fails("priorities", "s", "--where", "{oops", status=2)
    assert "give --url or --path, not both" in fails(
        "spaces", "--url", "http://127.0.0.1:1", "--path", tmp_path, status=2
    )
    assert "--dataset NAME" in fails(
        "load", "s", _npy(tmp_path)[0], "--path", tmp_path / "d", status=2
    )
    line = fails("spaces", env={"CHROMA_URL": f"http://127.0.0.1:{free_port()}"})
    assert "cannot reach the Chroma server" in line
    # a --path typed on the command line wins over CHROMA_URL in the environment
    store = tmp_path / "d"
    Client(path=store).close()
    assert ok("spaces", "--path", store, env={"CHROMA_URL": "http://127.0.0.1:1"}) == (
        "no spaces\n"
    )
    assert "does not exist" in fails("stats", "nope", "--path", store)


def test_a_path_without_a_store_is_named_not_created(tmp_path):
    typo = tmp_path / "chroma_dat"
    for command in (("spaces",), ("stats", "s"), ("priorities", "s"), ("rules", "list", "s")):
        line = fails(*command, "--path", typo, status=2)
        assert f"no Chroma store at '{typo}'" in line and "--path" in line
        assert "chroma load and chroma import create a store" in line
    assert not typo.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no Chroma store at" in fails("spaces", "--path", empty, status=2)
    assert "no Chroma store at" in fails("spaces", env={"CHROMA_PATH": str(typo)}, status=2)
    # load creates one where there is none
    ok("load", "s", _npy(tmp_path)[0], "--dataset", "d", "--path", typo)
    assert ok("spaces", "--path", typo).splitlines()[1].split()[0] == "s"


def test_run_serves_and_the_token_reaches_it(tmp_path):
    token_file = tmp_path / "tokens"
    token_file.write_text("tok-1\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHROMA_")}
    process = subprocess.Popen(
        [
            str(CHROMA),
            "run",
            "--port",
            str(port),
            "--path",
            str(tmp_path / "data"),
            "--auth-token-file",
            str(token_file),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert "wants a valid bearer token" in fails("spaces", "--url", url)
        x = _npy(tmp_path)
        ok("load", "s", x[0], *x[1], "--url", url, "--token", "tok-1")
        listed = json.loads(
            ok("spaces", "--json", env={"CHROMA_URL": url, "CHROMA_TOKEN": "tok-1"})
        )
        assert [(s["name"], s["count"]) for s in listed] == [("s", 25)]
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert "--log-requests" in ok("run", "--help")


@pytest.fixture
def loop_store(tmp_path):
    """Two labelled classes with two flipped labels, and triage inputs, one of them far
    away and one with a wrong inference."""
    rng = np.random.default_rng(16)
    data = tmp_path / "data"
    client = Client(path=data)
    space = client.space("loop")
    x = np.vstack([rng.normal(3, 1, (60, DIM)), rng.normal(-3, 1, (60, DIM))])
    labels = np.array(["cat"] * 60 + ["dog"] * 60, dtype=object)
    labels[[5, 70]] = ["dog", "cat"]
    space.add(x.astype(np.float32), dataset="train", labels=labels,
              ids=[f"t{i}" for i in range(120)])  # fmt: skip
    triage = np.vstack([rng.normal(3, 1, (9, DIM)), rng.normal(40, 1, (1, DIM))])
    space.add(triage.astype(np.float32), dataset="prod", context="triage",
              inferences=["dog"] + ["cat"] * 9, ids=[f"q{i}" for i in range(10)])  # fmt: skip
    client.close()
    return data


def test_the_loop_commands_compute_explain_issues_and_triggers(loop_store):
    data = ("--path", loop_store)
    done = chroma("compute", "loop", *data)
    assert done.returncode == 0, done.stderr
    # each phase seen is shown once as it starts; a short run may skip straight to done
    assert done.stderr.rstrip().endswith("done (10 rows, 120 training)")
    assert "scored: 10" in done.stdout
    issues = json.loads(ok("label-issues", "loop", "--json", *data))
    assert {row["id"] for row in issues} == {"t5", "t70"}
    assert {row["suggested_label"] for row in issues} == {"cat", "dog"}
    assert len(json.loads(ok("label-issues", "loop", "--all", "-n", "500", "--json", *data))) == 120
    text = ok("explain", "loop", "q0", "-k", "4", *data)
    assert text.startswith("q0: priority ") and "nearest 4 training inputs vote: cat 4" in text
    assert "from: " in text
    far = json.loads(ok("explain", "loop", "q9", "--json", *data))
    assert far["components"]["from_novelty"] > 0.5
    assert "prod" in ok("drift", "loop", *data)
    ok("duplicates", "loop", *data)
    made = json.loads(ok("trigger", "loop", "-n", "3", "--json", *data))
    items = json.loads(ok("trigger-items", str(made["id"]), "--json", *data))
    assert len(items) == 3 and "q0" in {row["id"] for row in items}
    moved = json.loads(ok("trigger-status", str(made["id"]), "done", "--json", *data))
    assert moved["status"] == "done"
    assert "'finished'" in fails("trigger-status", str(made["id"]), "finished", *data, status=2)


def test_delete_asks_first_and_removes_what_it_names(loop_store):
    data = ("--path", loop_store)
    line = fails("delete", "loop", "--ids", "q1", *data, status=2)
    assert "wants --yes when not run on a terminal" in line
    assert json.loads(ok("delete", "loop", "--ids", "q1,q2", "--yes", "--json", *data)) == {
        "space": "loop", "deleted": 2,
    }  # fmt: skip
    where = json.dumps({"dataset": "prod"})
    assert "deleted: 8" in ok("delete", "loop", "--where", where, "--yes", *data)
    assert "deleted_space: loop" in ok("delete", "loop", "--yes", *data)
    assert ok("spaces", *data) == "no spaces\n"
    assert "does not exist" in fails("delete", "gone", "--yes", *data)


def test_labels_go_out_to_label_studio_and_come_back_from_the_shell(loop_store, tmp_path):
    data = ("--path", loop_store)
    ok("compute", "loop", *data)
    made = json.loads(ok("trigger", "loop", "-n", "2", "--json", *data))
    tasks_file = tmp_path / "tasks.json"
    assert "tasks: 2" in ok("labels", "export", str(made["id"]), tasks_file, *data)
    tasks = json.loads(tasks_file.read_text())
    for task in tasks:
        task["annotations"] = [{"result": [{"value": {"choices": ["dog"]}}]}]
    exported = tmp_path / "export.json"
    exported.write_text(json.dumps(tasks))
    out = json.loads(ok("labels", "import", "loop", exported, "--into-training", "--json", *data))
    assert out == {"space": "loop", "labelled": 2, "into_training": True}
    client = Client(path=loop_store)
    got = client.space("loop").get(ids=[t["data"]["chroma_id"] for t in tasks])
    client.close()
    assert set(got["label"]) == {"dog"} and set(got["context"]) == {"training"}
    csv = tmp_path / "labels.csv"
    csv.write_text("id,label\nq9,cat\nmissing,cat\n")
    line = fails("labels", "import", "loop", csv, *data)
    assert "nothing was updated: 'missing'" in line
    assert "--format" in ok("labels", "import", "--help")


def test_load_names_the_columns_it_does_not_store_and_the_closest_to_a_typo(tmp_path):
    data = ("--path", tmp_path / "data")
    path = tmp_path / "rows.parquet"
    x = vectors(4, 1)
    pd.DataFrame({"embedding": list(x), "label": ["a", "b", "a", "b"], "who": ["ann"] * 4,
                  "score": [1, 2, 3, 4]}).to_parquet(path)  # fmt: skip
    done = chroma("load", "s", path, "--dataset", "d", *data)
    assert done.returncode == 0, done.stderr
    assert f"note: {path}: columns who, score not stored (--metadata-column NAME" in done.stderr
    summary = json.loads(ok("load", "t", path, "--dataset", "d", "--metadata-column", "score",
                            "--json", *data))  # fmt: skip
    assert summary["unused_columns"] == {str(path): ["who"]}
    client = Client(path=tmp_path / "data")
    assert client.space("t").get()["metadata"].tolist() == [{"score": i} for i in (1, 2, 3, 4)]
    client.close()
    line = fails("load", "u", path, "--dataset", "d", "--label-column", "lable", *data)
    assert "no column 'lable' for --label-column" in line and "did you mean 'label'?" in line
