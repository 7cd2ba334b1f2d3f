"""Retraining-priority benchmark: prints seconds, peak memory and ranking quality.

    .venv/bin/python bench/priority_scale.py               # 900,000 training + 100,000 triage
    .venv/bin/python bench/priority_scale.py --train 90000 --triage 10000
    CHROMA_STORE=clickhouse .venv/bin/python bench/priority_scale.py --train 9000000 \
        --triage 1000000

Generates labelled embeddings from Gaussian classes (class means of differing spread, 5% of
training labels flipped), and triage inputs: 90% whose inference is their true class, 8%
whose inference is wrong, 2% from classes the training set has never seen. Loads both through
the public client (embedded, on the store ``CHROMA_STORE`` names, SQLite unless set; the
similarity index left unbuilt, ClickHouse's inverted file left to finish training), then,
in a fresh process so its memory is measured alone, times ``space.compute_priorities()``
and reading every score back with ``space.priorities(n=None)``.

Quality: AUROC of ``priority`` for triage inputs whose inference is not their true label
(wrong or unseen class) against the rest. Agreement: for a random subset of triage inputs the
neighbours are found by an exact scan, and ``disagreement`` and ``distance`` computed from them
are compared with the stored components. Figures go in docs/priority.md.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import platform
import tempfile
import threading
import time

import numpy as np

from chroma_client import Client
from chroma_core.neighbor_search import knn

SPACE = "bench"


def classes(rng, n_classes: int, dim: int, scale: float):
    means = rng.normal(0, scale, size=(n_classes, dim)).astype(np.float32)
    spreads = rng.uniform(0.6, 1.4, size=n_classes).astype(np.float32)
    return means, spreads


def draw(rng, means, spreads, labels) -> np.ndarray:
    out = np.empty((len(labels), means.shape[1]), np.float32)
    step = 100_000
    for start in range(0, len(labels), step):
        part = labels[start : start + step]
        noise = rng.standard_normal((len(part), means.shape[1]), dtype=np.float32)
        out[start : start + step] = means[part] + spreads[part, None] * noise
    return out


def make_data(args):
    rng = np.random.default_rng(args.seed)
    means, spreads = classes(rng, args.classes + args.unseen, args.dim, args.scale)
    names = np.array([f"class-{c:03d}" for c in range(args.classes + args.unseen)], dtype=object)

    train_true = rng.integers(0, args.classes, args.train)
    train_x = draw(rng, means, spreads, train_true)
    flipped = rng.random(args.train) < args.label_noise
    train_labels = np.where(flipped, rng.integers(0, args.classes, args.train), train_true)

    kind = rng.choice(3, size=args.triage, p=[0.90, 0.08, 0.02])
    triage_true = np.where(
        kind == 2,
        rng.integers(args.classes, args.classes + args.unseen, args.triage),
        rng.integers(0, args.classes, args.triage),
    )
    triage_x = draw(rng, means, spreads, triage_true)
    wrong = (triage_true + rng.integers(1, args.classes, args.triage)) % args.classes
    inference = np.where(kind == 0, triage_true, wrong)
    return (
        train_x,
        names[train_labels],
        triage_x,
        names[inference],
        inference != triage_true,
    )


def load(path: str, train_x, train_labels, triage_x, triage_inference) -> float:
    client = Client(path=path)
    try:
        space = client.space(SPACE)
        start = time.perf_counter()
        training = {"dataset": "train", "context": "training", "labels": train_labels}
        triage = {"dataset": "prod", "context": "triage", "inferences": triage_inference}
        for vectors, prefix, fields in ((train_x, "t", training), (triage_x, "q", triage)):
            ids = np.char.add(prefix, np.arange(len(vectors)).astype(str))
            space.add(vectors, ids=ids, progress=False, **fields)
        loaded = time.perf_counter() - start
        if os.environ.get("CHROMA_STORE") != "clickhouse":
            # asking the status of a SQLite space would start building its similarity index
            print(f"loaded in {loaded:.1f} s", flush=True)
            return loaded
        # ClickHouse's inverted file finishes training before the scoring starts
        while space.status().get("index", {}).get("training"):
            time.sleep(1.0)
        index = space.status().get("index", {})
        print(f"loaded in {loaded:.1f} s; index settled after {time.perf_counter() - start:.1f}"
              f" s: {index}", flush=True)  # fmt: skip
        return loaded
    finally:
        client.close()


def measure(path: str, k: int) -> dict:
    """Runs in a fresh process: the time and memory of scoring, then of reading the scores."""
    # each phase's time, on stderr
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    for name in ("chroma.priority", "chroma.clickhouse.join"):
        logging.getLogger(name).setLevel(logging.INFO)
    threading.Thread(target=_resident, daemon=True).start()
    client = Client(path=path)
    try:
        space = client.space(SPACE)
        start = time.perf_counter()
        summary = space.compute_priorities(k=k)
        computed = time.perf_counter() - start
        logging.getLogger("bench.memory").info("reading every score back")
        start = time.perf_counter()
        scores = space.priorities(n=None)
        read = time.perf_counter() - start
        top = space.priorities(n=50)
    finally:
        client.close()
    return {
        "compute_s": computed,
        "read_s": read,
        "peak_rss": _high_water(),
        "summary": summary,
        "top_ok": bool(top["priority"].is_monotonic_decreasing) and len(top) == 50,
        "scores": scores[["id", "priority", "disagreement", "distance"]],
    }


def _high_water() -> int:
    """The process's peak resident bytes since it started its program (VmHWM; ru_maxrss
    would count the parent's memory at the fork that spawned it)."""
    with open("/proc/self/status") as status:
        return 1024 * int(next(line.split()[1] for line in status if line.startswith("VmHWM")))


def _resident(every: float = 10.0, step: float = 0.25) -> None:
    """Logs the process's resident memory every few seconds, and at once whenever it rises
    by ``step`` GiB above the highest so far, beside the phases' lines."""
    log = logging.getLogger("bench.memory")
    log.setLevel(logging.INFO)
    highest, last = 0.0, 0.0
    while True:
        with open("/proc/self/status") as status:
            rss = next((line.split()[1] for line in status if line.startswith("VmRSS")), "0")
        gib = int(rss) / 2**20
        now = time.monotonic()
        if gib > highest + step or now - last >= every:
            log.info("resident %.2f GiB", gib)
            highest, last = max(highest, gib), now
        time.sleep(0.2)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    ranks = np.empty(len(scores))
    order = np.argsort(scores, kind="stable")
    ranks[order] = np.arange(1, len(scores) + 1)
    # average ranks over ties
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def agreement(args, train_x, train_labels, triage_x, triage_inference, stored) -> dict:
    rng = np.random.default_rng(args.seed + 1)
    subset = rng.choice(len(triage_x), min(args.check, len(triage_x)), replace=False)
    neighbors, distances = knn(
        train_x, triage_x[subset], args.k, "l2", exact_limit=np.iinfo(np.int64).max
    )
    disagreement = (train_labels[neighbors] != triage_inference[subset, None]).mean(axis=1)
    distance = distances.mean(axis=1)
    by_id = stored.set_index("id").loc[np.char.add("q", subset.astype(str))]
    got_d = by_id["disagreement"].to_numpy()
    got_m = by_id["distance"].to_numpy()
    return {
        "rows": len(subset),
        "disagreement_equal": float((got_d == disagreement).mean()),
        "disagreement_mae": float(np.abs(got_d - disagreement).mean()),
        "distance_rel": float(np.median((got_m - distance) / distance)),
        "distance_rel_max": float(((got_m - distance) / distance).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=900_000, help="labelled training rows")
    parser.add_argument("--triage", type=int, default=100_000, help="triage rows to score")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--unseen", type=int, default=5, help="classes only triage rows have")
    parser.add_argument("--scale", type=float, default=1.0, help="spread of the class means")
    parser.add_argument("--label-noise", type=float, default=0.05)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--check", type=int, default=1_000, help="rows checked by exact scan")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmp", default=None, help="where the data directory goes")
    parser.add_argument(
        "--keep",
        default=None,
        help="a data directory kept after the run; when it already holds the space (from a "
        "run with the same arguments), loading is skipped and only the scoring is timed",
    )
    args = parser.parse_args()
    os.environ["CHROMA_SIMILARITY_BUILD"] = "lazy"

    print(
        f"{args.train:,} training + {args.triage:,} triage embeddings of dimension {args.dim}, "
        f"{args.classes} classes; {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        flush=True,
    )
    train_x, train_labels, triage_x, triage_inference, mistaken = make_data(args)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        path = args.keep or tmp
        if args.keep and os.path.isdir(args.keep) and os.listdir(args.keep):
            print(f"scoring the space kept in {args.keep}", flush=True)
        else:
            load(path, train_x, train_labels, triage_x, triage_inference)
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            result = pool.apply(measure, (path, args.k))
    stored = result["scores"]
    order = np.char.add("q", np.arange(args.triage).astype(str))
    priority = stored.set_index("id").loc[order, "priority"].to_numpy()
    check = agreement(args, train_x, train_labels, triage_x, triage_inference, stored)

    print(f"compute_priorities   {result['compute_s']:8.1f} s   {result['summary']}")
    print(f"priorities(n=None)   {result['read_s']:8.1f} s   {len(stored):,} rows")
    print(f"peak RSS             {result['peak_rss'] / 2**30:8.2f} GiB (scoring process)")
    print(f"AUROC (inference != true label)  {auroc(priority, mistaken):.4f}")
    print(
        f"vs exact on {check['rows']:,} triage rows: disagreement equal "
        f"{check['disagreement_equal']:.3f} (mean abs diff {check['disagreement_mae']:.4f}), "
        f"distance median rel. diff {check['distance_rel']:.2e} "
        f"(max {check['distance_rel_max']:.2e})"
    )
    assert result["top_ok"], "priorities(n=50) is not 50 rows, highest first"


if __name__ == "__main__":
    main()
