"""Ingest and k-NN benchmark: prints embeddings/s, disk use, query latency and recall.

    ./dev bench                      # 1,000,000 x 128 on SQLite, embedded and HTTP
    ./dev bench --store clickhouse   # the same on ClickHouse (embedded chdb)
    ./dev bench --store clickhouse --rows 10000000 --modes embedded --unfiltered exact

Adds clustered embeddings through the public client, then measures single-query k-NN latency
(p50, p99) and recall@10 against exact search, unfiltered and with a filter matching 2.5% of
rows, and the time to fetch 100,000 rows by filter. "index s" is how long the hnswlib index
took to catch up after the last add returned (queries meanwhile search unindexed rows
exactly). Figures go in docs/performance.md.
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


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def start_server(path: Path, env: dict) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Path(sys.executable).with_name("chroma-server")
    process = subprocess.Popen(
        [str(server), "--path", str(path), "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        env={**os.environ, **env},
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("chroma-server did not start")


def run(mode: str, data, queries, truth, args) -> dict:
    env = {"CHROMA_STORE": args.store}
    if args.vector_index:
        env["CHROMA_CLICKHOUSE_VECTOR_INDEX"] = "1"
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        process = None
        if mode == "http":
            process, url = start_server(Path(tmp), env)
            client = Client(url, batch_rows=args.batch)
        else:
            os.environ.update(env)
            client = Client(path=tmp, batch_rows=args.batch)
        try:
            space = client.space("bench")
            n = len(data)
            start = time.perf_counter()
            for lo in range(0, n, args.chunk):
                hi = min(n, lo + args.chunk)
                rare = np.where(np.arange(lo, hi) % 40 == 0, "rare", "common")
                space.add(
                    data[lo:hi],
                    dataset=rare,
                    context="training",
                    ids=np.char.add("r", np.arange(lo, hi).astype(str)),
                )
            ingest = time.perf_counter() - start
            size = disk_bytes(Path(tmp))
            if args.unfiltered == "index":
                space.wait_for_index()
            caught_up = time.perf_counter() - start - ingest

            def timed(where, expected):
                latencies, hits = [], []
                for q, t in zip(queries, expected, strict=True):
                    t0 = time.perf_counter()
                    frame = space.nearest_neighbors(q[None, :], k=10, where=where)
                    latencies.append(time.perf_counter() - t0)
                    found = {int(i[1:]) for i in frame["id"]}
                    hits.append(len(found & t) / 10)
                return latencies, float(np.mean(hits)), frame.attrs["meta"]["method"]

            result = {
                "mode": mode,
                "rows_per_s": n / ingest,
                "ingest_s": ingest,
                "bytes_per_row": size / n,
            }
            if args.unfiltered != "skip":
                where = {"context": "training"} if args.unfiltered == "exact" else None
                lat, recall, method = timed(where, truth)
                result.update(
                    first_s=caught_up,
                    p50_ms=1000 * np.percentile(lat, 50),
                    p99_ms=1000 * np.percentile(lat, 99),
                    recall=recall,
                    method=method,
                )
            lat, f_recall, fmethod = timed({"dataset": "rare"}, args.rare_truth)
            result.update(
                f_p50_ms=1000 * np.percentile(lat, 50),
                f_p99_ms=1000 * np.percentile(lat, 99),
                f_recall=f_recall,
                f_method=fmethod,
            )
            start = time.perf_counter()
            got = space.get(where={"dataset": "common"}, limit=100_000, include_embeddings=True)
            result["get_100k_s"] = time.perf_counter() - start
            assert len(got) == min(100_000, n - len(args.rare_set))
            return result
        finally:
            client.close()
            if process is not None:
                process.terminate()
                process.wait(timeout=300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="sqlite", choices=["sqlite", "clickhouse"])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=50_000, help="rows per request")
    parser.add_argument("--chunk", type=int, default=1_000_000, help="rows per add call")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--modes", default="embedded,http")
    parser.add_argument(
        "--unfiltered",
        default="index",
        choices=["index", "exact", "skip"],
        help="unfiltered k-NN through the index, as an exact scan, or not at all",
    )
    parser.add_argument(
        "--vector-index",
        action="store_true",
        help="ClickHouse's own HNSW index (CHROMA_CLICKHOUSE_VECTOR_INDEX=1)",
    )
    parser.add_argument("--tmp", default=None, help="where the data directories go")
    args = parser.parse_args()

    data = clustered(args.rows, args.dim, seed=0)
    queries = data[np.random.default_rng(1).choice(args.rows, args.queries, replace=False)]
    queries = queries + np.random.default_rng(2).normal(0, 0.3, queries.shape).astype(np.float32)
    truth, _ = exact_knn(queries, data, 10, "l2")
    truth = [set(t.tolist()) for t in truth]
    rare = np.arange(0, args.rows, 40)
    args.rare_set = set(rare.tolist())
    rare_truth, _ = exact_knn(queries, data[rare], 10, "l2")
    args.rare_truth = [set(rare[t].tolist()) for t in rare_truth]

    print(
        f"{args.rows:,} embeddings of dimension {args.dim} on {args.store}"
        f"{' with its vector index' if args.vector_index else ''}, requests of {args.batch:,}"
        f" rows; {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        flush=True,
    )
    print(
        f"{'mode':<10}{'ingest/s':>10}{'B/row':>7}{'index s':>9}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'recall':>8}  {'method':<24}{'filt p50':>9}{'filt p99':>9}{'recall':>8}  "
        f"{'filt method':<18}"
        f"{'get 100k s':>10}"
    )
    for mode in args.modes.split(","):
        r = run(mode, data, queries, truth, args)
        print(
            f"{r['mode']:<10}{r['rows_per_s']:>10,.0f}{r['bytes_per_row']:>7,.0f}"
            f"{r.get('first_s', float('nan')):>9.1f}{r.get('p50_ms', float('nan')):>8.2f}"
            f"{r.get('p99_ms', float('nan')):>8.2f}{r.get('recall', float('nan')):>8.3f}  "
            f"{r.get('method', '-'):<24}{r['f_p50_ms']:>9.1f}{r['f_p99_ms']:>9.1f}"
            f"{r['f_recall']:>8.3f}  "
            f"{r['f_method']:<18}{r['get_100k_s']:>10.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
