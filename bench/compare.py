"""Chroma side by side with the reference systems: one table of our figures, theirs and ratios.

    ./dev bench                                   # 1,000,000 x 128, every system below
    ./dev bench --rows 100000 --systems chroma-sqlite-embedded,hnswlib,chromadb-embedded
    ./dev bench --store clickhouse --rows 10000000 --modes embedded --unfiltered exact

Systems, run one after another, each in a fresh process and a fresh temporary directory:
chroma-{sqlite,clickhouse}-{embedded,http} (bench/ours.py, through the public client),
hnswlib (bench/reference_hnswlib.py, the library under our index, called directly) and
chromadb-{embedded,http} (bench/reference_chromadb.py, run in bench/.venv-reference, which
this script creates from bench/reference-requirements.txt the first time it is needed).
Every system gets the same data (bench/workload.py), the same HNSW settings (M=16,
ef_construction=100, ef = CHROMA_SIMILARITY_EF or 128) and is scored against the same exact
search. Metrics: acknowledged ingest, index catch-up after the last add (hnswlib: its build),
single-query k-NN p50/p99 with recall@10, 1,000 queries in one call, k-NN filtered to 2.5% of
rows, get 100,000 rows with embeddings by filter, get 10,000 rows by id, disk bytes per
embedding. ``--json FILE`` writes everything the table shows, and the settings in effect.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from arguments import known_names
from machine import cpu_model
from reference_env import reference_python
from workload import BATCH_QUERIES, GENERATORS, Workload

from chroma_algo_similarity.index import EF_CONSTRUCTION, EF_SEARCH, M
from chroma_core.distance import exact_knn

BENCH = Path(__file__).resolve().parent
K = 10
SYSTEMS = {
    # name: (column heading, runner)
    "chroma-sqlite-embedded": (("sqlite", "embedded"), "ours.py"),
    "chroma-sqlite-http": (("sqlite", "http"), "ours.py"),
    "chroma-clickhouse-embedded": (("clickhouse", "embedded"), "ours.py"),
    "chroma-clickhouse-http": (("clickhouse", "http"), "ours.py"),
    "hnswlib": (("hnswlib", "in-process"), "reference_hnswlib.py"),
    "chromadb-embedded": (("chromadb", "embedded"), "reference_chromadb.py"),
    "chromadb-http": (("chromadb", "http"), "reference_chromadb.py"),
}
#: ratio columns: (heading, ours, theirs)
RATIOS = [
    (("sqlite emb /", "chromadb emb"), "chroma-sqlite-embedded", "chromadb-embedded"),
    (("sqlite http /", "chromadb http"), "chroma-sqlite-http", "chromadb-http"),
    (("sqlite emb /", "hnswlib"), "chroma-sqlite-embedded", "hnswlib"),
]


@dataclass
class Metric:
    key: str
    label: str
    #: the recall printed next to it, for latencies and throughputs
    recall: str | None = None


def metrics(work: Workload) -> list[Metric]:
    return [
        Metric("ingest_rows_per_s", "ingest (acknowledged), rows/s"),
        Metric("ingest_s", "ingest, s"),
        Metric("index_s", "index catch-up / build, s"),
        Metric("ingest_index_s", "ingest + index, s"),
        Metric("knn_p50_ms", "k-NN p50, ms (recall)", "knn_recall"),
        Metric("knn_p99_ms", "k-NN p99, ms (recall)", "knn_recall"),
        Metric("batch_qps", f"{len(work.batch):,} queries/call, q/s", "batch_recall"),
        Metric("filtered_p50_ms", "filtered 2.5% p50, ms", "filtered_recall"),
        Metric("filtered_p99_ms", "filtered 2.5% p99, ms", "filtered_recall"),
        Metric("get_filter_s", f"get {work.get_filter_limit:,} by filter, s"),
        Metric("get_ids_ms", f"get {len(work.get_ids):,} by id, ms"),
        Metric("disk_bytes_per_row", "disk B/embedding, after load"),
        Metric("disk_bytes_per_row_closed", "disk B/embedding, at close"),
    ]


# --- running the systems -----------------------------------------------------
def run_system(name: str, python: Path, workload: Path, tmp: str | None) -> dict:
    """Run one system's runner in a fresh scratch directory; its result, or ``error``."""
    script = BENCH / SYSTEMS[name][1]
    env = dict(os.environ)
    if script.name == "reference_chromadb.py":
        env = {k: v for k, v in env.items() if not k.startswith("CHROMA_")}
        env["ANONYMIZED_TELEMETRY"] = "False"
    scratch = Path(tempfile.mkdtemp(prefix=f"bench-{name}-", dir=tmp))
    # its own session, so that whatever it started (a server) can be ended with it
    process = subprocess.Popen(
        [str(python), str(script), name, str(workload), str(scratch)],
        stdout=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate()
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        shutil.rmtree(scratch, ignore_errors=True)
    if process.returncode != 0:
        return {"error": f"exited with {process.returncode} (its stderr is above)"}
    try:
        return json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"printed no result: {out[-500:]!r}"}


# --- scoring -----------------------------------------------------------------
def recall(found: list[list[int]], truth: np.ndarray) -> float:
    hits = [len(set(f) & set(t.tolist())) / len(t) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits))


def summarise(raw: dict, truth: dict[str, np.ndarray], rows: int) -> dict:
    out: dict = {}
    ingest, index = raw.get("ingest_s"), raw.get("index_s")
    if ingest is not None:
        out.update(ingest_rows_per_s=rows / ingest, ingest_s=ingest)
    if index is not None:
        out["index_s"] = index
    if ingest is not None or index is not None:
        out["ingest_index_s"] = (ingest or 0.0) + (index or 0.0)
    for part in ("knn", "filtered"):
        if part in raw:
            latencies = 1000 * np.asarray(raw[part]["latencies_s"])
            out[f"{part}_p50_ms"] = float(np.percentile(latencies, 50))
            out[f"{part}_p99_ms"] = float(np.percentile(latencies, 99))
            out[f"{part}_recall"] = recall(raw[part]["rows"], truth[part])
            out[f"{part}_method"] = raw[part].get("method")
    if "batch" in raw:
        out["batch_qps"] = len(raw["batch"]["rows"]) / raw["batch"]["seconds"]
        out["batch_recall"] = recall(raw["batch"]["rows"], truth["batch"])
    if "get_filter" in raw:
        out["get_filter_s"] = raw["get_filter"]["seconds"]
        out["get_filter_rows"] = raw["get_filter"]["rows"]
    if "get_ids" in raw:
        out["get_ids_ms"] = 1000 * raw["get_ids"]["seconds"]
        out["get_ids_rows"] = raw["get_ids"]["rows"]
    if raw.get("disk_after_load") is not None:
        out["disk_bytes_per_row"] = raw["disk_after_load"] / rows
    if raw.get("disk_at_close") is not None:
        out["disk_bytes_per_row_closed"] = raw["disk_at_close"] / rows
    return out


# --- the table ---------------------------------------------------------------
def number(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cell(result: dict, metric: Metric) -> str:
    if "error" in result:
        return "error"
    value = result["metrics"].get(metric.key)
    if value is None:
        inline = metric.key == "index_s" and result.get("index_inline")
        return "in add" if inline else "-"
    text = number(value)
    if metric.recall and metric.recall in result["metrics"]:
        text += f" ({result['metrics'][metric.recall]:.3f})"
    return text


def ratio(results: dict, ours: str, theirs: str, metric: Metric) -> float | None:
    a = results[ours].get("metrics", {}).get(metric.key)
    b = results[theirs].get("metrics", {}).get(metric.key)
    return a / b if a is not None and b else None


def table(results: dict, ratios: list, rows: list[Metric]) -> str:
    headings = [SYSTEMS[name][0] for name in results] + [heading for heading, _, _ in ratios]
    body = []
    for metric in rows:
        cells = [cell(result, metric) for result in results.values()]
        for _, ours, theirs in ratios:
            value = ratio(results, ours, theirs, metric)
            cells.append("-" if value is None else number(value))
        body.append((metric.label, cells))
    label_width = max(len(label) for label, _ in body) + 2
    widths = [
        max(len(top), len(bottom), *(len(cells[i]) for _, cells in body)) + 2
        for i, (top, bottom) in enumerate(headings)
    ]

    def line(first: str, cells: list[str]) -> str:
        return first.ljust(label_width) + "".join(
            c.rjust(w) for c, w in zip(cells, widths, strict=True)
        )

    lines = [line("", [h[0] for h in headings]), line("metric", [h[1] for h in headings])]
    lines.append("-" * len(lines[-1]))
    lines.extend(line(label, cells) for label, cells in body)
    return "\n".join(lines)


def footnotes(results: dict, ratios: list) -> list[str]:
    notes = [
        "(0.xxx): recall@10 against exact search (filtered: over the rows the filter matches).",
        "index catch-up: from the last add returning until space.wait_for_index() returns; "
        "hnswlib: add_items on all cores.",
        "get: rows with embeddings and metadata. disk: du of the data directory right after the "
        "last add, and once closed (index saved).",
    ]
    if ratios:
        notes.append(
            "ratio = ours / theirs: above 1 is better for rows/s and q/s, below 1 for s, ms "
            "and bytes."
        )
    for name, result in results.items():
        if "error" in result:
            notes.append(f"{name}: {result['error']}")
            continue
        m = result["metrics"]
        if "knn_method" in m or "filtered_method" in m:
            notes.append(
                f"{name}: k-NN answered by {m.get('knn_method', '-')}, filtered by "
                f"{m.get('filtered_method', '-')}"
            )
        notes.extend(n for n in result.get("notes", []) if n not in notes)
        if name.startswith("chromadb"):
            notes.append(f"{name} settings in effect: {json.dumps(result.get('settings'))}")
    return notes


# --- the header --------------------------------------------------------------
def machine() -> dict:
    cpu = cpu_model()
    with open("/proc/meminfo") as f:
        kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return {
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "ram_gib": round(kib / 2**20, 1),
        "cpu": cpu,
        "kernel": platform.release(),
    }


def versions(results: dict) -> dict:
    out = {"python": platform.python_version()}
    for package in ("chroma", "hnswlib", "pyarrow", "numpy", "pandas", "chdb"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    for name, result in results.items():
        if name.startswith("chromadb") and "versions" in result:
            reference = result["versions"]
            out["chromadb"] = reference["chromadb"]
            out["chromadb_server"] = reference.get("server")
            out["reference_python"] = reference["python"]
            out["reference_numpy"] = reference["numpy"]
    return out


def command() -> str:
    knobs = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("CHROMA_")]
    return shlex.join([*knobs, "bench/compare.py", *sys.argv[1:]])


def header(args, work: Workload, info: dict) -> str:
    v = info["versions"]
    lib = ", ".join(
        f"{p} {v[p]}" for p in ("chroma", "hnswlib", "pyarrow", "numpy", "chdb") if p in v
    )
    if "chromadb" in v:
        lib += (
            f"; chromadb {v['chromadb']} (server {v['chromadb_server']}) in Python "
            f"{v['reference_python']}, numpy {v['reference_numpy']}"
        )
    m = info["machine"]
    return "\n".join(
        [
            f"Chroma and reference systems: {len(work.data):,} embeddings x {args.dim} "
            f"({args.data} data), {len(work.queries):,} single queries, {len(work.batch):,} "
            f"in one call, k={K}; HNSW M={M}, ef_construction={EF_CONSTRUCTION}, ef={args.ef}",
            f"machine: {m['arch']}, {m['cores']} cores, {m['ram_gib']} GiB, {m['cpu']}",
            f"Python {v['python']}; {lib}",
            f"command: {info['command']}",
        ]
    )


# --- main --------------------------------------------------------------------
def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join((__doc__ or "").splitlines()[1:]),
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=200, help="single-vector queries")
    parser.add_argument(
        "--systems",
        default=None,
        help=f"comma-separated, from: {','.join(SYSTEMS)} (default: all)",
    )
    parser.add_argument("--data", default="embedding", choices=sorted(GENERATORS))
    parser.add_argument("--tmp", default=None, help="where data directories go")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument(
        "--ef",
        type=int,
        default=int(os.environ.get("CHROMA_SIMILARITY_EF", EF_SEARCH)),
        help="HNSW search breadth for every system (default: CHROMA_SIMILARITY_EF or 128)",
    )
    parser.add_argument("--batch", type=int, default=50_000, help="rows per request")
    parser.add_argument("--chunk", type=int, default=1_000_000, help="rows per add call (ours)")
    parser.add_argument(
        "--unfiltered",
        default="index",
        choices=["index", "exact", "skip"],
        help="ours: unfiltered k-NN through the index, as an exact scan, or not at all",
    )
    parser.add_argument(
        "--vector-index",
        action="store_true",
        help="ClickHouse's own HNSW index (CHROMA_CLICKHOUSE_VECTOR_INDEX=1)",
    )
    parser.add_argument(
        "--store",
        choices=["sqlite", "clickhouse"],
        help="only our systems on this store (with --modes)",
    )
    parser.add_argument("--modes", default=None, help="with --store: embedded,http")
    parser.add_argument(
        "--reference-venv",
        type=Path,
        default=BENCH / ".venv-reference",
        help="the environment chromadb is installed into",
    )
    args = parser.parse_args()
    if args.systems is not None and (args.store or args.modes):
        parser.error("give --systems or --store/--modes, not both")
    if args.store or args.modes:
        modes = (args.modes or "embedded,http").split(",")
        args.systems = ",".join(f"chroma-{args.store or 'sqlite'}-{m}" for m in modes)
    args.systems = known_names(
        parser, (args.systems or ",".join(SYSTEMS)).split(","), SYSTEMS, "systems"
    )
    return args


def main() -> None:
    args = parse()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    pythons = {name: Path(sys.executable) for name in args.systems}
    if any(name.startswith("chromadb") for name in args.systems):
        reference = reference_python(args.reference_venv, BENCH / "reference-requirements.txt")
        pythons.update({n: reference for n in args.systems if n.startswith("chromadb")})

    t0 = time.perf_counter()
    work = Workload.generate(args.data, args.rows, args.dim, args.queries)
    rare = work.rare
    truth = {
        "knn": exact_knn(work.queries, work.data, K, "l2")[0],
        "batch": exact_knn(work.batch, work.data, K, "l2")[0],
        "filtered": rare[exact_knn(work.queries, work.data[rare], K, "l2")[0]],
    }
    log(
        f"workload: {args.rows:,} x {args.dim} {args.data} data and exact answers in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    spec = {
        "k": K,
        "M": M,
        "ef_construction": EF_CONSTRUCTION,
        "ef": args.ef,
        "batch": args.batch,
        "chunk": args.chunk,
        "unfiltered": args.unfiltered,
        "vector_index": args.vector_index,
    }
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-workload-", dir=args.tmp) as directory:
        work.save(Path(directory), spec)
        for i, name in enumerate(args.systems, 1):
            log(f"[{i}/{len(args.systems)}] {name}")
            t0 = time.perf_counter()
            raw = run_system(name, pythons[name], Path(directory), args.tmp)
            if "error" not in raw:
                raw["metrics"] = summarise(raw, truth, args.rows)
                raw["index_inline"] = name.startswith("chromadb")
            for part in ("knn", "batch", "filtered"):
                raw.pop(part, None)  # the per-query answers are scored, not kept
            results[name] = raw
            log(f"  {name} done in {time.perf_counter() - t0:.1f} s")

    ratios = [r for r in RATIOS if r[1] in results and r[2] in results]
    info = {
        "started": started,
        "command": command(),
        "machine": machine(),
        "versions": versions(results),
    }
    rows = metrics(work)
    print(header(args, work, info))
    print()
    print(table(results, ratios, rows))
    print()
    for note in footnotes(results, ratios):
        print(note)
    if args.json:
        document = {
            **info,
            "rows": args.rows,
            "dim": args.dim,
            "data": args.data,
            "queries": len(work.queries),
            "batch_queries": BATCH_QUERIES,
            "spec": spec,
            "metric_labels": {m.key: m.label for m in rows},
            "systems": results,
            "ratios": {
                f"{ours} / {theirs}": {
                    m.key: ratio(results, ours, theirs, m)
                    for m in rows
                    if ratio(results, ours, theirs, m) is not None
                }
                for _, ours, theirs in ratios
            },
        }
        Path(args.json).write_text(json.dumps(document, indent=1) + "\n")
    if any("error" in r for r in results.values()):
        sys.exit(1)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
