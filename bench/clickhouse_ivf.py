"""The ClickHouse store's inverted file (CHROMA_CLICKHOUSE_IVF=1) beside raw hnswlib and an
exact numpy scan, in one run on the same data and queries.

Loads ``--rows`` embeddings through the embedded client into the ClickHouse store (chdb),
waits for the space's inverted file to be trained, then times single k-NN queries through
the client at each ``--probes`` setting (a client reopened with CHROMA_CLICKHOUSE_IVF_PROBES)
and reports p50/p99 latency and recall@10 against exact search, with raw hnswlib's latency
and recall at its default settings, built on the same rows in this process, for scale. The
machine's speed swings from run to run: read the ratios.

    .venv/bin/python bench/clickhouse_ivf.py --rows 1000000 --probes 8,16,32,64
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from arguments import sized_parser
from machine import cpu_model
from workload import GENERATORS, near_points

from chroma_client import Client
from chroma_core.distance import exact_knn

K = 10
SPACE = "bench"


def client(path: Path, probes: int, train_rows: int) -> Client:
    os.environ.update(
        {
            "CHROMA_STORE": "clickhouse",
            "CHROMA_CLICKHOUSE_IVF": "1",
            "CHROMA_CLICKHOUSE_IVF_PROBES": str(probes),
            "CHROMA_CLICKHOUSE_IVF_TRAIN_ROWS": str(train_rows),
        }
    )
    return Client(path=path)


def timed_queries(space, queries: np.ndarray) -> tuple[np.ndarray, list[float]]:
    found, latencies = [], []
    for q in queries:
        start = time.perf_counter()
        frame = space.nearest_neighbors(queries=q[None, :], k=K)
        latencies.append(time.perf_counter() - start)
        found.append([int(i[1:]) for i in frame["id"]])
    return np.array(found), latencies


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def summary(latencies: list[float]) -> dict:
    ms = np.array(latencies) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2)}  # fmt: skip


def main() -> None:
    parser = sized_parser(__doc__.split("\n")[0], rows=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--probes", default="8,16,32,64")
    parser.add_argument("--data", default="embedding", choices=sorted(GENERATORS))
    parser.add_argument("--tmp", help="where the store goes (default: the system's)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    probes = [int(p) for p in args.probes.split(",")]
    data, spread = GENERATORS[args.data](args.rows, args.dim, seed=0)
    queries = near_points(data, args.queries, 0.3 * spread, seed=1)
    truth = exact_knn(queries, data, K, "l2")[0]
    root = Path(tempfile.mkdtemp(prefix="chroma-ivf-", dir=args.tmp))
    result: dict = {
        "machine": {"arch": platform.machine(), "cores": os.cpu_count(), "cpu": cpu_model()},
        "rows": args.rows, "dim": args.dim, "data": args.data, "queries": args.queries,
    }  # fmt: skip
    try:
        # trained once, when the last batch is in: as many cells as the space will have
        first = client(root / "data", probes[0], train_rows=args.rows)
        space = first.space(SPACE, metric="l2")
        ids = np.char.add("r", np.arange(args.rows).astype(str))
        start = time.perf_counter()
        space.add(data, ids=ids, dataset="d", progress=False)
        result["ingest_rows_per_s"] = round(args.rows / (time.perf_counter() - start))
        print(f"ingest: {result['ingest_rows_per_s']:,} rows/s", file=sys.stderr)
        start = time.perf_counter()
        while True:
            reply, _ = first._call("nearest_neighbors", {"space": SPACE, "k": 1}, _query(data))
            if reply["meta"].get("method") == "clickhouse_ivf":
                break
            time.sleep(1)
        result["trained_after_s"] = round(time.perf_counter() - start, 1)
        result["cells"] = reply["meta"]["cells"]
        print(f"trained: {result['cells']} cells", file=sys.stderr)
        first.close()
        result["ivf"] = {}
        for p in probes:
            c = client(root / "data", p, train_rows=args.rows)
            s = c.space(SPACE, metric="l2")
            timed_queries(s, queries[:10])  # warm: centroids cached, pages in memory
            found, latencies = timed_queries(s, queries)
            result["ivf"][p] = {**summary(latencies), "recall": round(recall(found, truth), 4)}
            print(f"probes {p}: {result['ivf'][p]}", file=sys.stderr)
            c.close()
        result["hnswlib"] = hnswlib_figures(data, queries, truth)
        result["exact_numpy"] = exact_figures(data, queries)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


def _query(vector: np.ndarray):
    import pyarrow as pa

    first = vector[:1].astype(np.float32)
    flat = pa.array(first.ravel())
    return pa.table({"embedding": pa.FixedSizeListArray.from_arrays(flat, first.shape[1])})


def hnswlib_figures(data: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict:
    import hnswlib

    from chroma_algo_similarity.index import EF_CONSTRUCTION, EF_SEARCH, M

    index = hnswlib.Index(space="l2", dim=data.shape[1])
    index.init_index(max_elements=len(data), ef_construction=EF_CONSTRUCTION, M=M)
    start = time.perf_counter()
    index.add_items(data, np.arange(len(data)))
    build = time.perf_counter() - start
    index.set_ef(EF_SEARCH)
    latencies, found = [], []
    for q in queries:
        start = time.perf_counter()
        labels, _ = index.knn_query(q, k=K)
        latencies.append(time.perf_counter() - start)
        found.append(labels[0])
    return {**summary(latencies), "recall": round(recall(np.array(found), truth), 4),
            "build_s": round(build, 1)}  # fmt: skip


def exact_figures(data: np.ndarray, queries: np.ndarray) -> dict:
    latencies = []
    for q in queries[:50]:
        start = time.perf_counter()
        exact_knn(q[None, :], data, K, "l2")
        latencies.append(time.perf_counter() - start)
    return summary(latencies)


if __name__ == "__main__":
    main()
