"""Runner for Chroma itself: ``chroma-{sqlite,clickhouse}-{embedded,http}`` (see runner.py).

Goes through the public client only. Embedded: ``Client(path=...)`` in this process; HTTP:
``chroma-server`` started from this environment on a free loopback port, stopped at the end.
Rows are added in calls of ``chunk`` rows sent as requests of ``batch`` rows; "index" is the
time from the last add returning until ``space.wait_for_index()`` returns and no training of
the ClickHouse store's inverted file runs (queries meanwhile search the rows the index does
not hold yet exactly, or the inverted file's last generation).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import runner
from runner import disk_bytes, log, row_numbers

from chroma_algo_similarity.index import EF_CONSTRUCTION, M
from chroma_client import Client

#: settings that would point the run at data outside its scratch directory
FOREIGN = (
    "CHROMA_URL",
    "CHROMA_PATH",
    "CHROMA_STORE",
    "CHROMA_CLICKHOUSE_DSN",
    "CHROMA_CLICKHOUSE_HOST",
    "CHROMA_CLICKHOUSE_DATABASE",
    "CHROMA_CLICKHOUSE_VECTOR_INDEX",
    "CHROMA_CLICKHOUSE_IVF",
)


def environment(store: str, spec: dict) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN}
    env["CHROMA_STORE"] = store
    env["CHROMA_SIMILARITY_EF"] = str(spec["ef"])
    if store == "clickhouse" and spec["vector_index"]:
        # ClickHouse's own HNSW index answers in place of the inverted file
        env["CHROMA_CLICKHOUSE_VECTOR_INDEX"] = "1"
        env["CHROMA_CLICKHOUSE_IVF"] = "0"
    return env


def start_server(path: Path, log_path: Path, env: dict) -> tuple[subprocess.Popen, str]:
    port = runner.free_port()
    server = Path(sys.executable).with_name("chroma-server")
    process = subprocess.Popen(
        [str(server), "--path", str(path), "--port", str(port), "--log-level", "warning"],
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if process.poll() is not None:
            raise RuntimeError(f"chroma-server exited: {log_path.read_text()}")
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.terminate()
    raise RuntimeError("chroma-server did not start")


def run(system: str, spec: dict, arrays: dict[str, np.ndarray], scratch: Path) -> dict:
    _, store, mode = system.split("-")
    env = environment(store, spec)
    path = scratch / "data"
    process = None
    if mode == "http":
        process, url = start_server(path, scratch / "server.log", env)
        client = Client(url, batch_rows=spec["batch"])
    else:
        os.environ.clear()
        os.environ.update(env)
        client = Client(path=path, batch_rows=spec["batch"])
    try:
        result = measure(client, spec, arrays, path)
    finally:
        client.close()
        if process is not None:
            process.terminate()
            process.wait(timeout=600)
    result["disk_at_close"] = disk_bytes(path)
    result["settings"] = {
        "store": store,
        "mode": mode,
        "M": M,
        "ef_construction": EF_CONSTRUCTION,
        "ef": spec["ef"],
        "request_rows": spec["batch"],
        "add_call_rows": spec["chunk"],
        "unfiltered": spec["unfiltered"],
        **({"clickhouse_vector_index": spec["vector_index"]} if store == "clickhouse" else {}),
        **{k: v for k, v in env.items() if k.startswith("CHROMA_") and k not in FOREIGN},
    }
    return result


def measure(client: Client, spec: dict, arrays: dict[str, np.ndarray], path: Path) -> dict:
    data, k, every = arrays["data"], spec["k"], spec["rare_every"]
    space = client.space("bench")
    n = len(data)
    start = time.perf_counter()
    for lo in range(0, n, spec["chunk"]):
        hi = min(n, lo + spec["chunk"])
        rows = np.arange(lo, hi)
        space.add(
            data[lo:hi],
            dataset=np.where(rows % every == 0, "rare", "common"),
            context="training",
            ids=np.char.add("r", rows.astype(str)),
        )
    ingest = time.perf_counter() - start
    log(f"added {n:,} rows in {ingest:.1f} s")
    result: dict = {"ingest_s": ingest, "disk_after_load": disk_bytes(path), "notes": []}
    if spec["unfiltered"] == "index":
        space.wait_for_index()
        # the ClickHouse store's inverted file finds every row at once, and trains a new
        # generation in the background as the space grows: the index is ready when it ends
        while space.status()["index"].get("training"):
            time.sleep(0.5)
        result["index_s"] = time.perf_counter() - start - ingest
        log(f"index caught up {result['index_s']:.1f} s after the last add")

    def single(queries: np.ndarray, where: dict | None) -> dict:
        latencies, found = [], []
        for q in queries:
            t0 = time.perf_counter()
            frame = space.nearest_neighbors(q[None, :], k=k, where=where)
            latencies.append(time.perf_counter() - t0)
            found.append(row_numbers(frame["id"]))
        return {"latencies_s": latencies, "rows": found, "method": frame.attrs["meta"]["method"]}

    if spec["unfiltered"] != "skip":
        where = {"context": "training"} if spec["unfiltered"] == "exact" else None
        result["knn"] = single(arrays["queries"], where)
        batch = arrays["batch"]
        t0 = time.perf_counter()
        frame = space.nearest_neighbors(batch, k=k, where=where)
        seconds = time.perf_counter() - t0
        found: list[list[int]] = [[] for _ in batch]
        for q, row in zip(frame["query"], row_numbers(frame["id"]), strict=True):
            found[q].append(row)
        result["batch"] = {"seconds": seconds, "rows": found}
        log(f"unfiltered queries answered by {result['knn']['method']}")
    result["filtered"] = single(arrays["queries"], {"dataset": "rare"})

    limit = spec["get_filter_limit"]
    t0 = time.perf_counter()
    got = space.get(where={"dataset": "common"}, limit=limit, include_embeddings=True)
    result["get_filter"] = {"seconds": time.perf_counter() - t0, "rows": len(got)}
    ids = np.char.add("r", arrays["get_ids"].astype(str))
    t0 = time.perf_counter()
    got = space.get(ids=ids, include_embeddings=True)
    result["get_ids"] = {"seconds": time.perf_counter() - t0, "rows": len(got)}
    return result


if __name__ == "__main__":
    runner.main(run)
