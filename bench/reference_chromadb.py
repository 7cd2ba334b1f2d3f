"""Runner for chromadb, the reference system: ``chromadb-embedded`` and ``chromadb-http``.

Runs in bench/.venv-reference (bench/reference-requirements.txt), started by compare.py as

    bench/.venv-reference/bin/python bench/reference_chromadb.py SYSTEM WORKLOAD SCRATCH

and imports only chromadb, numpy and the standard library; the protocol is runner.py's (read
.npy files and spec.json, print one JSON object on stdout), whose few lines it repeats.

Embedded is ``chromadb.PersistentClient(path)``; HTTP is ``chroma run --path --port`` from
this environment and ``chromadb.HttpClient``, the server stopped at the end. The collection
gets explicit embeddings and no embedding function, l2 space and the HNSW settings of the
spec (``max_neighbors`` is M); the settings reported are read back from the collection, so
they are the ones in effect. Adds go in batches of ``client.get_max_batch_size()`` rows (at
most the spec's request size), each with ids and a metadata dict per row; the get by filter
is paged the same way (a get of more than 32,766 rows fails with "too many SQL variables"),
the get of 10,000 ids is one call. chromadb updates its HNSW index inside ``add`` (rows are
searchable at full speed when it returns: see the first query's time in the log), so it has
no separate index time.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import chromadb
import numpy as np
from chromadb.config import Settings


def disk_bytes(path: Path) -> int:
    return sum(f.lstat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def row_numbers(ids) -> list[int]:
    return [int(i[1:]) for i in ids]


def start_server(path: Path, log_path: Path) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    chroma = Path(sys.executable).with_name("chroma")
    process = subprocess.Popen(
        [str(chroma), "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )
    settings = Settings(anonymized_telemetry=False)
    for _ in range(600):
        if process.poll() is not None:
            raise RuntimeError(f"chroma run exited: {log_path.read_text()}")
        try:
            chromadb.HttpClient(host="127.0.0.1", port=port, settings=settings).heartbeat()
            return process, port
        except Exception:
            time.sleep(0.1)
    process.terminate()
    raise RuntimeError("chroma run did not start")


def run(system: str, spec: dict, arrays: dict, scratch: Path) -> dict:
    path = scratch / "data"
    settings = Settings(anonymized_telemetry=False)
    process = None
    if system == "chromadb-http":
        process, port = start_server(path, scratch / "server.log")
        client = chromadb.HttpClient(host="127.0.0.1", port=port, settings=settings)
    else:
        client = chromadb.PersistentClient(path=str(path), settings=settings)
    try:
        result = measure(client, spec, arrays, path)
        result["versions"]["server"] = client.get_version()
    finally:
        if hasattr(client, "close"):
            client.close()
        if process is not None:
            process.terminate()
            process.wait(timeout=600)
    result["disk_at_close"] = disk_bytes(path)
    return result


def applied_settings(client, collection, batch: int) -> dict:
    hnsw = dict((collection.configuration or {}).get("hnsw") or {})
    try:  # chromadb >= 1.2 also reports num_threads and batch_size in the schema
        config = collection.schema.keys["#embedding"].float_list.vector_index.config.hnsw
        hnsw.update(num_threads=config.num_threads, batch_size=config.batch_size)
    except Exception:
        pass
    return {
        "hnsw": hnsw,
        "embedding_function": (collection.configuration or {}).get("embedding_function"),
        "max_batch_size": client.get_max_batch_size(),
        "add_batch_rows": batch,
        "query_include": ["metadatas", "distances"],
        "get_include": ["embeddings", "metadatas"],
    }


def measure(client, spec: dict, arrays: dict, path: Path) -> dict:
    data, k, every = arrays["data"], spec["k"], spec["rare_every"]
    collection = client.create_collection(
        "bench",
        configuration={
            "hnsw": {
                "space": "l2",
                "max_neighbors": spec["M"],
                "ef_construction": spec["ef_construction"],
                "ef_search": spec["ef"],
            }
        },
        embedding_function=None,
    )
    batch = min(client.get_max_batch_size(), spec["batch"])
    n = len(data)
    start = time.perf_counter()
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        collection.add(
            ids=[f"r{i}" for i in range(lo, hi)],
            embeddings=data[lo:hi],
            metadatas=[
                {"dataset": "rare" if i % every == 0 else "common", "context": "training"}
                for i in range(lo, hi)
            ],
        )
    ingest = time.perf_counter() - start
    log(f"added {n:,} rows in {ingest:.1f} s, in batches of {batch:,}")
    result: dict = {
        "ingest_s": ingest,
        "index_s": None,
        "disk_after_load": disk_bytes(path),
        "settings": applied_settings(client, collection, batch),
        "versions": {
            "chromadb": chromadb.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
        "notes": ["chromadb: HNSW index updated inside add, no separate index time"],
    }
    include = ["metadatas", "distances"]

    def single(queries, where) -> dict:
        latencies, found = [], []
        for q in queries:
            t0 = time.perf_counter()
            answer = collection.query(
                query_embeddings=q[None, :], n_results=k, where=where, include=include
            )
            latencies.append(time.perf_counter() - t0)
            found.append(row_numbers(answer["ids"][0]))
        return {"latencies_s": latencies, "rows": found, "method": "query"}

    result["knn"] = single(arrays["queries"], None)
    log(f"first query after the last add: {1000 * result['knn']['latencies_s'][0]:.1f} ms")
    t0 = time.perf_counter()
    answer = collection.query(query_embeddings=arrays["batch"], n_results=k, include=include)
    seconds = time.perf_counter() - t0
    result["batch"] = {"seconds": seconds, "rows": [row_numbers(ids) for ids in answer["ids"]]}
    result["filtered"] = single(arrays["queries"], {"dataset": "rare"})

    # a get of more than 32,766 rows fails ("too many SQL variables"): pages of the max batch
    page = client.get_max_batch_size()
    get_include = ["embeddings", "metadatas"]
    t0 = time.perf_counter()
    fetched, limit = 0, spec["get_filter_limit"]
    while fetched < limit:
        got = collection.get(
            where={"dataset": "common"},
            limit=min(page, limit - fetched),
            offset=fetched,
            include=get_include,
        )
        if not got["ids"]:
            break
        fetched += len(got["ids"])
    result["get_filter"] = {"seconds": time.perf_counter() - t0, "rows": fetched}
    ids = [f"r{i}" for i in arrays["get_ids"].tolist()]
    t0 = time.perf_counter()
    got = collection.get(ids=ids, include=get_include)  # one call: 10,000 ids go through
    result["get_ids"] = {"seconds": time.perf_counter() - t0, "rows": len(got["ids"])}
    result["settings"]["get_by_filter_page_rows"] = page
    return result


def main() -> None:
    system, workload, scratch = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    result_stream = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever chromadb prints goes to stderr; stdout carries the result only
    spec = json.loads((workload / "spec.json").read_text())
    arrays = {p.stem: np.load(p) for p in workload.glob("*.npy")}
    result = run(system, spec, arrays, scratch)
    result_stream.write(json.dumps(result) + "\n")
    result_stream.flush()


if __name__ == "__main__":
    main()
