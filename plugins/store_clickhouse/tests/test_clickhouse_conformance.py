"""The ClickHouse store passes the store conformance suite, run as any store package runs it,
on the embedded chdb engine.

chdb opens one data directory per process, so every ClickHouse store this test process
opens names the same one (``tests/stores.py`` derives it the same way); each test's store
keeps its tables in a database of its own, named after the test's data directory.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path

import pytest

from chroma_core.testing import StoreConformance

pytest.importorskip("chdb", reason="the embedded ClickHouse engine: pip install chdb")


@cache
def chdb_directory() -> Path:
    path = Path(tempfile.gettempdir()) / f"chroma-chdb-{os.getpid()}"
    path.mkdir(exist_ok=True)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


class TestClickHouseConformance(StoreConformance):
    store_name = "clickhouse"

    def store_environment(self, path: Path) -> dict[str, str]:
        database = "t_" + hashlib.sha1(str(path).encode()).hexdigest()[:16]
        return {
            "CHROMA_CLICKHOUSE_DSN": f"chdb://{chdb_directory()}",
            "CHROMA_CLICKHOUSE_DATABASE": database,
        }
