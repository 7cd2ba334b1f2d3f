"""Crash safety: what a server killed with SIGKILL at any moment leaves behind.

The first tests run a real ``chroma-server`` on each store, with writer processes adding
batches while the server is killed at seeded random moments and restarted on the same data
directory (tests/reliability.py; bench/reliability.py runs hundreds of rounds). The last
ones kill a process at chosen points between the several writes of one ClickHouse
operation, where a random kill rarely lands.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability import crash_rounds, index_save_rounds, priority_kill_rounds
from tests.stores import STORES

ROOT = Path(__file__).resolve().parent.parent
SEED = 20260


def report(figures) -> str:
    return f"{figures.problems[:10]} ({figures})"


@pytest.mark.parametrize("store", STORES)
def test_acknowledged_batches_survive_kills_whole_and_none_is_stored_in_part(store, tmp_path):
    # ClickHouse restarts take seconds (the embedded engine loads its tables): fewer rounds
    rounds = 3 if store == "sqlite" else 2
    figures = crash_rounds(
        store,
        tmp_path,
        rounds=rounds,
        writers=3,
        seed=SEED,
        wait=(0.1, 0.5),
        pause=0.02,
        scored_rows=600,
    )
    assert figures.problems == [], report(figures)
    assert figures.kills == figures.rounds == rounds
    assert figures.batches_acked > 10 and figures.rows_checked > 100, report(figures)
    # every row stored, acknowledged or not, was searched for by its own vector
    assert figures.rows_queried == figures.rows_checked
    # priorities and triggers recorded before each kill were there after it
    assert figures.scores_checked > 0 and figures.triggers_checked > 0, report(figures)
    # a writer's add fails only for want of a server, after its retries ran out
    assert set(figures.errors) <= {"ConnectionFailed", "RetriesExhausted"}


def test_a_kill_while_the_index_is_saved_leaves_an_index_that_agrees_with_the_store(tmp_path):
    # kills land while a save writes its files; in the second round a page of the saved
    # index is then lost as well, which its checksum must reveal
    figures = index_save_rounds("sqlite", tmp_path, rounds=2, rows=3000, seed=SEED)
    assert figures.problems == [], report(figures)
    assert any(o.startswith("killed saving") for o in figures.outcomes), report(figures)
    # whichever moment the kill caught (saving, between saves, meta being replaced)
    torn = sum(n for o, n in figures.outcomes.items() if o.endswith("page lost"))
    assert torn == 1 and figures.outcomes["index rebuilt on start"] >= 1, report(figures)


def test_a_kill_during_a_priority_computation_leaves_the_last_complete_scores(tmp_path):
    figures = priority_kill_rounds("sqlite", tmp_path, rounds=3, rows=2000, seed=SEED)
    assert figures.problems == [], report(figures)
    assert figures.kills == 3 and figures.scores_checked >= 3 * 1500


# --- kills at chosen points ----------------------------------------------------------------
PRELUDE = """
import json, os, signal, sys
from pathlib import Path
import numpy as np, pyarrow as pa
from chroma_core.config import Settings
from chroma_core.plugins import open_store
from chroma_core.schema import validate_rows
from chroma_store_clickhouse.store import ClickHouseStore

def crash_on(method, n=1):
    # SIGKILL on the n-th call of the method from now: the process stops there, as in a crash
    original, calls = getattr(ClickHouseStore, method), [0]
    def crashing(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, *args, **kwargs)
    setattr(ClickHouseStore, method, crashing)

def emit(out):
    print(json.dumps(out), flush=True)

def rows(ids, dim=4):
    v = np.arange(len(ids) * dim, dtype=np.float32).reshape(len(ids), dim)
    return validate_rows(pa.table({
        "id": pa.array(ids), "dataset": pa.array(["d"] * len(ids)),
        "context": pa.array(["triage"] * len(ids)),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), dim),
    }), None)

def scores(priorities):
    return pa.table({"id": list(priorities), "priority": list(priorities.values())})

def now(space):
    t = store.priorities(space)
    return list(zip(t.column("id").to_pylist(), t.column("priority").to_pylist()))

settings = Settings.from_env({"CHROMA_STORE": "clickhouse"}, path=Path(sys.argv[1]))
store = open_store(settings)
"""

# each step checks what the step before left, then starts an operation and is killed
# between two of its writes (crash_on), where a random kill rarely lands
STEPS = [
    # the first add of a space, before its space row records the dimension
    """
store.create_space("d", "l2", {})
crash_on("_write_space")
store.add("d", rows(["a", "b"]))
""",
    # a rewrite of priorities, before the space row names its new generation
    """
info = store.get_space("d")
out = {"dim": info.dim, "count": info.count}
out["vectors"] = store.get("d", include_embeddings=True).column("embedding").to_pylist()
try:
    store.add("d", rows(["c"], dim=8))
except Exception as exc:
    out["other dim"] = type(exc).__name__
emit(out)
store.create_space("p", "l2", {})
store.add("p", rows(["a", "b", "c"]))
store.replace_priorities("p", scores({"a": 0.9, "b": 0.5}))
crash_on("_write_space")
store.replace_priorities("p", scores({"a": 0.1, "b": 0.2, "c": 0.3}))
""",
    # a trigger, after its items and before its row
    """
out = {"after the crash": now("p")}
store.replace_priorities("p", scores({"c": 0.7}))
out["after the next rewrite"] = now("p")
emit(out)
store.create_trigger("p", scores({"a": 0.9}), None, {})
crash_on("_write_trigger")
store.create_trigger("p", scores({"b": 0.5, "c": 0.4}), None, {})
""",
    """
out = {"triggers": [t["count"] for t in store.list_triggers()]}
new = store.create_trigger("p", scores({"c": 0.1}), None, {})
out["new"] = [new["count"], store.trigger_items(new["id"]).column("id").to_pylist()]
emit(out)
""",
]


def test_clickhouse_operations_cut_short_leave_nothing_the_next_one_builds_on(tmp_path):
    found = []
    for number, step in enumerate(STEPS):
        done = subprocess.run(
            [sys.executable, "-c", PRELUDE + step, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )
        killed = number < len(STEPS) - 1
        assert done.returncode == (-9 if killed else 0), done.stderr[-3000:]
        found += [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    first_add, rewrite, trigger = found
    # the rows of the first add are there, with the dimension they fixed
    assert first_add == {
        "dim": 4,
        "count": 2,
        "vectors": [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]],
        "other dim": "DimensionMismatch",
    }
    # the old scores stay; the scores written by the rewrite never join the next one's
    assert rewrite == {
        "after the crash": [["a", 0.9], ["b", 0.5]],
        "after the next rewrite": [["c", 0.7]],
    }
    # the trigger never recorded is not listed, and its items join no later trigger
    assert trigger == {"triggers": [1], "new": [1, ["c"]]}
