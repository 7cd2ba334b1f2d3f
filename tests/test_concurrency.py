"""Concurrency: many client processes on one server, and several processes on one data
directory.

The first test runs 8 writer and 8 reader processes against a real ``chroma-server`` on
each store for a few seconds (tests/reliability.py; bench/reliability.py runs them for
minutes). The others open one data directory twice: the second opener, in this process or
another, embedded or a server, gets ``DirectoryInUse`` at once, naming the directory and the
holder's pid, and the directory opens again once the first is closed or killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from chroma_client import Client
from chroma_client.errors import DirectoryInUse
from tests.conftest import Server
from tests.reliability import concurrency_run
from tests.stores import STORES

ROOT = Path(__file__).resolve().parent.parent
SEED = 20261


@pytest.mark.parametrize("store", STORES)
def test_eight_writers_and_eight_readers_see_whole_batches_and_exact_counts(store, tmp_path):
    figures = concurrency_run(store, tmp_path, writers=8, readers=8, seconds=2.0, seed=SEED)
    assert figures.problems == [], f"{figures.problems[:10]} ({figures})"
    assert figures.processes == 16 and figures.errors == {}
    ops = figures.operations
    assert ops["add"] > 0 and ops["rows added"] == figures.rows_checked
    assert ops["get by dataset"] > 0, figures


# --- one data directory, two openers ----------------------------------------------------
OPEN = """
import os, sys, time
from chroma_client import Client
from chroma_client.errors import DirectoryInUse
try:
    client = Client(path=sys.argv[1])
except DirectoryInUse as exc:
    print(f"DirectoryInUse: {exc.detail}", flush=True)
    raise SystemExit(3)
space = client.space("s")
space.add([[1.0, 2.0]], dataset="d", ids=[f"from-{os.getpid()}"])
print("opened", space.count(), flush=True)
if len(sys.argv) > 2:
    time.sleep(float(sys.argv[2]))
client.close()
"""


def open_embedded(path: Path, store: str, hold: float | None = None) -> subprocess.Popen:
    env = {**os.environ, "CHROMA_STORE": store}
    env.pop("CHROMA_CLICKHOUSE_DSN", None)
    args = [sys.executable, "-c", OPEN, str(path)] + ([str(hold)] if hold else [])
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def wait_for_line(process: subprocess.Popen) -> str:
    assert process.stdout is not None
    return process.stdout.readline().strip()


@pytest.mark.parametrize("store", STORES)
def test_a_second_opener_of_a_directory_is_refused_at_once_embedded_or_server(store, tmp_path):
    path = tmp_path / "data"
    holder = open_embedded(path, store, hold=120)
    try:
        assert wait_for_line(holder) == "opened 1"
        second = open_embedded(path, store)
        line = wait_for_line(second)
        assert second.wait(timeout=60) == 3
        assert line.startswith("DirectoryInUse")
        assert str(path.resolve()) in line and f"pid {holder.pid}" in line
        with pytest.raises(RuntimeError, match=f"in use by another Chroma \\(pid {holder.pid}\\)"):
            Server(path, env={"CHROMA_STORE": store})
        # both refused while the holder still holds the directory: neither waited for it
        assert holder.poll() is None
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the kernel let go of the killed holder's lock: a server opens the directory, data intact
    server = Server(path, env={"CHROMA_STORE": store})
    try:
        with Client(server.url) as client:
            space = client.space("s")
            space.add([[0.0, 1.0]], dataset="d", ids=["by-server"])
            assert space.count() == 2
        embedded = open_embedded(path, store)
        line = wait_for_line(embedded)
        assert embedded.wait(timeout=60) == 3
        assert f"pid {server.process.pid}" in line and str(path.resolve()) in line
    finally:
        server.stop()


def test_a_directory_is_refused_to_a_second_client_in_the_same_process(tmp_path):
    first = Client(path=tmp_path / "data")
    with pytest.raises(DirectoryInUse, match=f"this process, pid {os.getpid()}"):
        Client(path=tmp_path / "data")
    first.close()
    second = Client(path=tmp_path / "data")
    assert second.spaces().empty
    second.close()


def test_a_deleted_lock_file_lets_no_second_chroma_in(tmp_path):
    path = tmp_path / "data"
    holder = open_embedded(path, "sqlite", hold=120)
    try:
        assert wait_for_line(holder) == "opened 1"
        (path / "chroma.lock").unlink()  # as a clean-up script might
        second = open_embedded(path, "sqlite")
        line = wait_for_line(second)
        assert second.wait(timeout=60) == 3
        assert line.startswith("DirectoryInUse") and "chroma.lock was deleted" in line
        with pytest.raises(DirectoryInUse, match="chroma.lock was deleted"):
            Client(path=path)
        assert holder.poll() is None
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    again = Client(path=path)
    assert again.spaces()["name"].tolist() == ["s"]
    again.close()
