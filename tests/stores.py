"""The stores every store-agnostic test runs against, and how each is opened in tests.

Each store proves its contract with the conformance suite (``chroma_core.testing``), run
from its own package's tests; the tests here run the whole product on both.

ClickHouse runs as the embedded chdb engine, which takes one data directory per process:
every ClickHouse store in the test process shares one engine, in a directory named after
the process (as ``plugins/store_clickhouse/tests`` names it), and each test's store gets a
database of its own, named after the test's data path.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
import time
from functools import cache
from pathlib import Path

import pytest

from chroma_client import Client
from chroma_core.config import Settings

STORES = ["sqlite", "clickhouse"]


@cache
def chdb_directory() -> Path:
    path = Path(tempfile.gettempdir()) / f"chroma-chdb-{os.getpid()}"
    path.mkdir(exist_ok=True)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def store_environment(name: str, path: Path) -> dict[str, str]:
    """``CHROMA_*`` variables selecting store ``name`` for data under ``path``."""
    env = {"CHROMA_STORE": name}
    if name == "clickhouse":
        env["CHROMA_CLICKHOUSE_DSN"] = f"chdb://{chdb_directory()}"
        env["CHROMA_CLICKHOUSE_DATABASE"] = "t_" + hashlib.sha1(str(path).encode()).hexdigest()[:16]
    return env


def store_settings(name: str, path: Path) -> Settings:
    return Settings.from_env(store_environment(name, path), path=path)


def indexed_clickhouse_client(path: Path, train_rows: int = 1000) -> Client:
    """An embedded client on the ClickHouse store for data under ``path``, its inverted file
    trained once a space holds ``train_rows`` rows (few, so that tests reach the paths an
    indexed space takes). The caller closes it."""
    environment = {
        **store_environment("clickhouse", path),
        "CHROMA_CLICKHOUSE_IVF_TRAIN_ROWS": str(train_rows),
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in environment.items():
            patch.setenv(key, value)
        return Client(path=path)


def wait_until_indexed(space, timeout: float = 60.0) -> None:
    """Return once the space's inverted file has a generation and is not training."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        index = space.status()["index"]
        if index.get("generation") and not index.get("training"):
            return
        time.sleep(0.2)
    raise AssertionError(f"the inverted file was not trained: {space.status()}")


def embedded_client(store: str, path: Path, monkeypatch, **extra: str) -> Client:
    """A client running ``store`` in this process on ``path``, with ``extra`` ``CHROMA_*``
    variables set for the test."""
    for key, value in {**store_environment(store, path), **extra}.items():
        monkeypatch.setenv(key, value)
    return Client(path=path)
