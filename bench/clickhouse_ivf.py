"""The ClickHouse store's inverted file (CHROMA_CLICKHOUSE_IVF=1) beside raw hnswlib and an
exact numpy scan, in one run on the same data and queries.

Loads ``--rows`` embeddings through the embedded client into the ClickHouse store (chdb), in
batches of a million read from a memory-mapped file, waits for the space's inverted file to
be trained, then times through the client:

- single k-NN queries at each ``--probes`` setting (a client reopened with
  CHROMA_CLICKHOUSE_IVF_PROBES): p50/p99 latency and recall@10 against exact search;
- all the queries in one call (searched together);
- filtered k-NN on 1% and 10% of the rows (a dataset each), recall against exact search
  over the matching rows;
- get of 10,000 rows by id, and the process's anonymous resident memory while serving (the
  data set is a file mapping, so this is the store's and the service's own memory);
- adds into the trained space (a tenth more rows, each put in its cell as it is stored);

with raw hnswlib's latency and recall at its default settings, built on the same rows in
this process (``--hnswlib-rows`` caps it; 0 leaves it out), for scale. The machine's speed
swings from run to run: read the ratios.

    .venv/bin/python bench/clickhouse_ivf.py --rows 1000000 --probes 8,16,32,64
    .venv/bin/python bench/clickhouse_ivf.py --rows 10000000 --probes 16,32,64 --hnswlib-rows 0
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


def datasets(rows: int) -> np.ndarray:
    """Each row's dataset: every 100th row in "one", every 10th of the others in "ten"
    (1% and 9.9% of the rows, spread over the whole space), the rest in "rest"."""
    names = np.full(rows, "rest", dtype=object)
    seq = np.arange(rows)
    names[seq % 10 == 5] = "ten"
    names[seq % 100 == 0] = "one"
    return names


def resident_anonymous_mb() -> float | None:
    """This process's anonymous resident memory (RssAnon), in MB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def main() -> None:
    parser = sized_parser(__doc__.split("\n")[0], rows=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--probes", default="8,16,32,64")
    parser.add_argument("--data", default="embedding", choices=sorted(GENERATORS))
    parser.add_argument(
        "--hnswlib-rows",
        type=int,
        default=2_000_000,
        help="raw hnswlib is built on at most this many rows (0: not at all)",
    )
    parser.add_argument(
        "--exact-queries", type=int, default=20, help="single queries timed on the exact scan"
    )
    parser.add_argument("--tmp", help="where the store goes (default: the system's)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    probes = [int(p) for p in args.probes.split(",")]
    root = Path(tempfile.mkdtemp(prefix="chroma-ivf-", dir=args.tmp))
    result: dict = {
        "machine": {"arch": platform.machine(), "cores": os.cpu_count(), "cpu": cpu_model()},
        "rows": args.rows, "dim": args.dim, "data": args.data, "queries": args.queries,
    }  # fmt: skip
    try:
        generated, spread = GENERATORS[args.data](args.rows, args.dim, seed=0)
        np.save(root / "data.npy", generated)
        del generated
        data = np.load(root / "data.npy", mmap_mode="r")
        queries = near_points(data, args.queries, 0.3 * spread, seed=1)
        truth = exact_in_blocks(queries, data)
        names = datasets(args.rows)
        filtered = {name: np.flatnonzero(names == name) for name in ("one", "ten")}
        filtered_truth = {
            name: rows[exact_knn(queries[:50], data[rows], K, "l2")[0]]
            for name, rows in filtered.items()
        }
        # trained once, when the last batch is in: as many cells as the space will have
        first = client(root / "data", probes[0], train_rows=args.rows)
        space = first.space(SPACE, metric="l2")
        ids = np.char.add("r", np.arange(args.rows).astype(str))
        start = time.perf_counter()
        for at in range(0, args.rows, 1_000_000):
            end = min(at + 1_000_000, args.rows)
            space.add(np.asarray(data[at:end]), ids=ids[at:end], dataset=names[at:end].astype(str),
                      progress=False)  # fmt: skip
        result["ingest_rows_per_s"] = round(args.rows / (time.perf_counter() - start))
        print(f"ingest: {result['ingest_rows_per_s']:,} rows/s", file=sys.stderr)
        start = time.perf_counter()
        while not space.status()["index"]["generation"]:
            time.sleep(1)
        result["trained_after_s"] = round(time.perf_counter() - start, 1)
        result["cells"] = space.status()["index"]["cells"]
        print(f"trained: {result['cells']} cells", file=sys.stderr)
        first.close()
        result["ivf"] = {}
        for p in probes:
            started = time.perf_counter()
            c = client(root / "data", p, train_rows=args.rows)
            s = c.space(SPACE, metric="l2")
            timed_queries(s, queries[:1])
            if "first_query_s" not in result:
                result["first_query_s"] = round(time.perf_counter() - started, 2)
            timed_queries(s, queries[:10])  # warm: centroids cached, pages in memory
            found, latencies = timed_queries(s, queries)
            result["ivf"][p] = {**summary(latencies), "recall": round(recall(found, truth), 4)}
            print(f"probes {p}: {result['ivf'][p]}", file=sys.stderr)
            if p == probes[0]:
                result["one_call"] = one_call_figures(s, queries, truth)
                result["filtered"] = filtered_figures(s, queries[:50], filtered_truth)
                result["get_10000_ids"] = get_figures(s, ids)
                result["resident_anonymous_mb"] = resident_anonymous_mb()
                result["ingest_trained"] = trained_ingest(s, args, data, spread)
            c.close()
        result["disk_bytes_per_row"] = round(_disk_bytes(root / "data") / args.rows)
        if args.hnswlib_rows:
            n = min(args.rows, args.hnswlib_rows)
            subset = np.asarray(data[:n])
            sub_truth = truth if n == args.rows else exact_knn(queries, subset, K, "l2")[0]
            result["hnswlib"] = {**hnswlib_figures(subset, queries, sub_truth), "rows": n}
        result["exact_numpy"] = exact_figures(data, queries[: args.exact_queries])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


def trained_ingest(space, args, data: np.ndarray, spread: float) -> dict:
    """Rows/s of adds into the trained space, each row put in its cell as it is stored: a
    tenth more rows (at most a million), new points near the stored ones, in batches of
    100,000."""
    extra = min(args.rows // 10, 1_000_000)
    more = near_points(data, extra, spread, seed=2)
    ids = np.char.add("n", np.arange(extra).astype(str))
    start = time.perf_counter()
    for at in range(0, extra, 100_000):
        space.add(more[at : at + 100_000], ids=ids[at : at + 100_000], dataset="rest",
                  progress=False)  # fmt: skip
    seconds = time.perf_counter() - start
    print(f"ingest into the trained space: {extra / seconds:,.0f} rows/s", file=sys.stderr)
    return {"rows": extra, "rows_per_s": round(extra / seconds)}


def one_call_figures(space, queries: np.ndarray, truth: np.ndarray) -> dict:
    """All the queries in one call (searched together, a few hundred a statement)."""
    start = time.perf_counter()
    frame = space.nearest_neighbors(queries=queries, k=K)
    seconds = time.perf_counter() - start
    found = frame.groupby("query")["id"].apply(lambda ids: [int(i[1:]) for i in ids])
    rows = np.array([(found[i] + [-1] * K)[:K] for i in range(len(queries))])
    out = {"queries_per_s": round(len(queries) / seconds), "recall": round(recall(rows, truth), 4)}
    print(f"{len(queries)} queries in one call: {out}", file=sys.stderr)
    return out


def filtered_figures(space, queries: np.ndarray, truths: dict) -> dict:
    out = {}
    for name, truth in truths.items():
        found, latencies = [], []
        for q in queries:
            start = time.perf_counter()
            frame = space.nearest_neighbors(queries=q[None, :], k=K, where={"dataset": name})
            latencies.append(time.perf_counter() - start)
            found.append([int(i[1:]) for i in frame["id"]])
        out[name] = {**summary(latencies), "recall": round(recall(np.array(found), truth), 4),
                     "method": frame.attrs.get("meta", {}).get("method")}  # fmt: skip
        print(f"filtered {name}: {out[name]}", file=sys.stderr)
    return out


def get_figures(space, ids: np.ndarray) -> dict:
    rng = np.random.default_rng(5)
    latencies = []
    for _ in range(5):
        picked = list(ids[rng.choice(len(ids), 10_000, replace=False)])
        start = time.perf_counter()
        frame = space.get(ids=picked)
        latencies.append(time.perf_counter() - start)
        assert len(frame) == 10_000
    return {"p50_ms": round(float(np.median(latencies)) * 1000, 1)}


def _disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def exact_in_blocks(queries: np.ndarray, data: np.ndarray, block: int = 1_000_000) -> np.ndarray:
    """Row numbers of each query's K nearest rows, reading ``data`` once, a block at a time
    (the rows may be a file mapping larger than memory)."""
    best = np.full((len(queries), K), -1, dtype=np.int64)
    best_d = np.full((len(queries), K), np.inf, dtype=np.float32)
    for start in range(0, len(data), block):
        found, dists = exact_knn(queries, np.asarray(data[start : start + block]), K, "l2")
        both = np.concatenate([best, found + start], axis=1)
        both_d = np.concatenate([best_d, dists], axis=1)
        order = np.argsort(both_d, axis=1, kind="stable")[:, :K]
        best = np.take_along_axis(both, order, axis=1)
        best_d = np.take_along_axis(both_d, order, axis=1)
    return best


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
