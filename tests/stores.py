"""The stores every store-agnostic test runs against, and how each is opened in tests.

ClickHouse runs as the embedded chdb engine, which takes one data directory per process:
every ClickHouse store in the test process shares one engine, and each test's store gets a
database of its own, named after the test's data path.
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
from functools import cache
from pathlib import Path

from chroma_core.config import Settings

STORES = ["sqlite", "clickhouse"]


@cache
def chdb_directory() -> Path:
    path = Path(tempfile.mkdtemp(prefix="chroma-chdb-"))
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
