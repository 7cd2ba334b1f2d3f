"""What a batch key costs an add: prints rows/s with and without a key, per store.

    .venv/bin/python bench/batch_keys.py                 # 200,000 x 128 in batches of 50,000
    .venv/bin/python bench/batch_keys.py --rows 20000 --repeat 1

Adds the same rows to fresh spaces through the service, as the server does for each request,
alternating between batches without a key and batches with one (the store hashes the batch
and keeps the key in the add's transaction), and prints the best and median time of each,
wall-clock and CPU (of every thread of the process: on a busy machine the steadier figure).
The ClickHouse store runs embedded (chdb). The similarity index is left unbuilt, so the
figures are the store's own. Nothing is written outside a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from chroma_core.config import Settings
from chroma_core.schema import batch_fingerprint, validate_rows
from chroma_core.service import Chroma


def batches(rows: int, dim: int, size: int) -> list[pa.Table]:
    rng = np.random.default_rng(0)
    out = []
    for start in range(0, rows, size):
        n = min(size, rows - start)
        matrix = rng.normal(size=(n, dim)).astype(np.float32)
        out.append(
            pa.table(
                {
                    "id": [f"r{i}" for i in range(start, start + n)],
                    "dataset": ["bench"] * n,
                    "context": ["training"] * n,
                    "label": [str(i % 10) for i in range(n)],
                    "embedding": pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), dim),
                }
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stores", default="sqlite,clickhouse")
    args = parser.parse_args()
    data = batches(args.rows, args.dim, args.batch)
    print(
        f"{args.rows:,} rows x {args.dim} in batches of {args.batch:,}; "
        f"{os.cpu_count()} cores {platform.machine()}, Python {platform.python_version()}"
    )
    valid = [validate_rows(table, None) for table in data]
    started = time.process_time()
    for table in valid:
        batch_fingerprint(table)
    print(f"batch_fingerprint of every batch, alone: {time.process_time() - started:.3f} s CPU")

    for store in args.stores.split(","):
        scratch = tempfile.TemporaryDirectory(prefix=f"bench-keys-{store}-")
        root = Path(scratch.name)
        # ClickHouse without a server runs embedded under the path; the index is built only
        # when first queried, so it takes no time from the adds
        env = {"CHROMA_STORE": store, "CHROMA_SIMILARITY_BUILD": "lazy"}
        settings = Settings.from_env(env, path=root)
        chroma = Chroma(settings)
        times: dict[str, list[float]] = {"without key": [], "with key": []}
        cpu: dict[str, list[float]] = {"without key": [], "with key": []}
        try:
            for run in range(args.repeat):
                for label in times:
                    space = f"{label.replace(' ', '-')}-{run}"
                    chroma.space(space)
                    started, started_cpu = time.perf_counter(), time.process_time()
                    for table in data:
                        key = secrets.token_hex(16) if label == "with key" else None
                        chroma.add(space, table, key)
                    times[label].append(time.perf_counter() - started)
                    cpu[label].append(time.process_time() - started_cpu)
        finally:
            chroma.close()
            scratch.cleanup()
        for label, seconds in times.items():
            best, median = min(seconds), statistics.median(seconds)
            print(
                f"{store:10s} {label:12s} best {best:6.2f} s ({args.rows / best:>9,.0f} rows/s)"
                f"  median {median:.2f} s  CPU best {min(cpu[label]):.2f} s"
                f" median {statistics.median(cpu[label]):.2f} s"
            )


if __name__ == "__main__":
    main()
