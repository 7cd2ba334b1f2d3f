"""Runner for raw hnswlib, the library under Chroma's index (see runner.py).

The same M, ef_construction and ef as Chroma, in this environment's hnswlib. "index" is the
build: ``add_items`` on the whole matrix with every core. Single queries go one vector at a
time on one thread; the batch is one ``knn_query`` on every core; the filtered query passes a
``filter=`` callback that accepts the rare rows (called from Python for each candidate, so
on one thread). Disk is the size of the saved index file. There is no store: no ingest, no
gets.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import hnswlib
import numpy as np
import runner
from runner import disk_bytes, log


def run(system: str, spec: dict, arrays: dict[str, np.ndarray], scratch: Path) -> dict:
    data, k = arrays["data"], spec["k"]
    n, dim = data.shape
    cores = os.cpu_count() or 1
    index = hnswlib.Index(space="l2", dim=dim)
    index.init_index(max_elements=n, ef_construction=spec["ef_construction"], M=spec["M"])
    start = time.perf_counter()
    index.add_items(data, np.arange(n), num_threads=cores)
    build = time.perf_counter() - start
    log(f"built the index of {n:,} rows in {build:.1f} s on {cores} threads")
    index.set_ef(spec["ef"])

    def single(queries: np.ndarray, accept=None) -> dict:
        latencies, found = [], []
        for q in queries:
            t0 = time.perf_counter()
            labels, _ = index.knn_query(q[None, :], k=k, num_threads=1, filter=accept)
            latencies.append(time.perf_counter() - t0)
            found.append(labels[0].tolist())
        return {"latencies_s": latencies, "rows": found}

    knn = {**single(arrays["queries"]), "method": "knn_query"}
    t0 = time.perf_counter()
    labels, _ = index.knn_query(arrays["batch"], k=k, num_threads=cores)
    batch = {"seconds": time.perf_counter() - t0, "rows": labels.tolist()}
    rare = np.arange(n) % spec["rare_every"] == 0
    filtered = {**single(arrays["queries"], lambda label: bool(rare[label])), "method": "filter="}

    path = scratch / "data"
    path.mkdir()
    index.save_index(str(path / "index.bin"))
    size = disk_bytes(path)
    return {
        "settings": {
            "M": spec["M"],
            "ef_construction": spec["ef_construction"],
            "ef": index.ef,
            "build_threads": cores,
            "query_threads": {"single": 1, "batch": cores, "filtered": 1},
        },
        "notes": ["hnswlib: index build in place of ingest; disk is the saved index file"],
        "ingest_s": None,
        "index_s": build,
        "disk_after_load": size,
        "disk_at_close": size,
        "knn": knn,
        "batch": batch,
        "filtered": filtered,
    }


if __name__ == "__main__":
    runner.main(run)
