"""Ingest and k-NN benchmark: prints embeddings/s, query latency and recall.

    ./dev bench                                   # 1,000,000 x 128, embedded and HTTP
    ./dev bench --rows 100000 --modes embedded    # smaller

Adds clustered embeddings through the public client in batches, then measures single-query
k-NN latency (p50, p99) and recall@10 against exact search. Figures go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from chroma_client import Client
from chroma_core.distance import exact_knn


def clustered(n: int, d: int, seed: int, clusters: int = 100) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, size=(clusters, d)).astype(np.float32)
    out = np.empty((n, d), np.float32)
    step = 100_000
    for start in range(0, n, step):
        m = min(step, n - start)
        out[start : start + m] = centers[rng.integers(0, clusters, m)] + rng.normal(size=(m, d))
    return out


def start_server(path: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Path(sys.executable).with_name("chroma-server")
    process = subprocess.Popen(
        [str(server), "--path", str(path), "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("chroma-server did not start")


def run(mode: str, data: np.ndarray, queries: np.ndarray, truth: np.ndarray, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        process = None
        if mode == "http":
            process, url = start_server(Path(tmp))
            client = Client(url, batch_rows=batch)
        else:
            client = Client(path=tmp, batch_rows=batch)
        try:
            space = client.space("bench")
            datasets = np.where(np.arange(len(data)) % 40 == 0, "rare", "common")
            start = time.perf_counter()
            space.add(data, dataset=datasets, context="training")
            ingest = time.perf_counter() - start

            start = time.perf_counter()
            space.nearest_neighbors(queries[:1], k=10)
            first = time.perf_counter() - start

            latencies, found = [], []
            for q in queries:
                t = time.perf_counter()
                frame = space.nearest_neighbors(q[None, :], k=10)
                latencies.append(time.perf_counter() - t)
                found.append(frame["id"].tolist())
            position = {i: n for n, i in enumerate(space.get(limit=None)["id"])}
            hits = [
                len({position[i] for i in f} & set(t)) / 10
                for f, t in zip(found, truth, strict=True)
            ]

            filtered = []
            for q in queries[:50]:
                t = time.perf_counter()
                space.nearest_neighbors(q[None, :], k=10, where={"dataset": "rare"})
                filtered.append(time.perf_counter() - t)
            return {
                "mode": mode,
                "ingest_rows_per_s": len(data) / ingest,
                "ingest_s": ingest,
                "first_query_s": first,
                "p50_ms": 1000 * float(np.percentile(latencies, 50)),
                "p99_ms": 1000 * float(np.percentile(latencies, 99)),
                "recall_at_10": float(np.mean(hits)),
                "filtered_p50_ms": 1000 * float(np.percentile(filtered, 50)),
            }
        finally:
            client.close()
            if process is not None:
                process.terminate()
                process.wait(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--modes", default="embedded,http")
    args = parser.parse_args()

    data = clustered(args.rows, args.dim, seed=0)
    queries = data[np.random.default_rng(1).choice(args.rows, args.queries, replace=False)]
    queries = queries + np.random.default_rng(2).normal(0, 0.3, queries.shape).astype(np.float32)
    truth, _ = exact_knn(queries, data, 10, "l2")
    truth = [set(t) for t in truth]

    print(
        f"{args.rows:,} embeddings of dimension {args.dim}, batches of {args.batch:,}; "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"{'mode':<10}{'ingest/s':>12}{'ingest s':>10}{'index+1st q s':>15}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'recall@10':>11}{'filt p50 ms':>13}"
    )
    for mode in args.modes.split(","):
        r = run(mode, data, queries, truth, args.batch)
        print(
            f"{r['mode']:<10}{r['ingest_rows_per_s']:>12,.0f}{r['ingest_s']:>10.1f}"
            f"{r['first_query_s']:>15.1f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
            f"{r['recall_at_10']:>11.3f}{r['filtered_p50_ms']:>13.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
