"""The ``manifest`` handler: the selected inputs as a Parquet file in the data directory."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def write_manifest(directory: Path, trigger: dict, items: pa.Table) -> dict:
    """Write ``triggers/<space>-<id>.parquet`` atomically and return the delivery record."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{trigger['space']}-{trigger['id']}.parquet"
    tmp = path.with_suffix(".parquet.tmp")
    metadata = {
        b"chroma.trigger_id": str(trigger["id"]).encode(),
        b"chroma.space": trigger["space"].encode(),
    }
    pq.write_table(items.replace_schema_metadata(metadata), tmp)
    os.replace(tmp, path)
    return {"ok": True, "path": str(path.resolve()), "rows": items.num_rows}
