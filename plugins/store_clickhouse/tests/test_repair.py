"""An embedded engine left with empty definitions (a full disk or a crash while a space's
tables were made) starts again, says what it repaired, and keeps every space.

The embedded engine takes one data directory per process, so each opening runs in a
process of its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("chdb")

OPEN = """
import json, logging, os, sys
import numpy as np
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
os.environ["CHROMA_STORE"] = "clickhouse"
os.environ.pop("CHROMA_CLICKHOUSE_DSN", None)
from chroma_core.service import Chroma
from chroma_core.config import Settings
import pyarrow as pa

def rows(prefix, n):
    return pa.table({
        "id": [f"{prefix}{i}" for i in range(n)], "dataset": ["d"] * n,
        "context": ["training"] * n,
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(4 * n, np.float32)), 4),
    })

chroma = Chroma(Settings.from_env(path=sys.argv[1]))
step = sys.argv[2]
if step == "make":
    chroma.space("kept")
    chroma.add("kept", rows("k", 10))
    # the tables of a second space, made as a space's making begins, its space row never
    # written: what a full disk at that moment leaves
    for statement in __import__("chroma_store_clickhouse.schema", fromlist=["x"]).space_tables(2):
        chroma.store._command(statement)
elif step == "check":
    made = chroma.space("new")
    chroma.add("new", rows("n", 3))
    print(json.dumps({
        "spaces": {s.name: s.count for s in chroma.spaces()},
        "kept": sorted(chroma.get("kept").column("id").to_pylist()),
    }), flush=True)
chroma.close()
"""


def run(path: Path, step: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-c", OPEN, str(path), step],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_empty_definitions_left_by_a_crash_are_repaired_and_every_space_kept(tmp_path):
    path = tmp_path / "data"
    run(path, "make")
    root = path / "clickhouse"
    half_made = list(root.glob("store/*/*/rows_2.sql"))
    assert len(half_made) == 1
    half_made[0].write_bytes(b"")
    (root / "metadata" / "chroma.sql").write_bytes(b"")

    done = run(path, "check")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["spaces"] == {"kept": 10, "new": 3}
    assert found["kept"] == sorted(f"k{i}" for i in range(10))
    assert "definition of database 'chroma' was empty; written again" in done.stderr
    assert "definition of table 'rows_2' was empty" in done.stderr
    assert list((root / "damaged").rglob("rows_2.sql"))
    # nothing is left to repair the next time
    assert "was empty" not in run(path, "check_again").stderr
