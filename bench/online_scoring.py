"""Scoring on arrival: triage rows streamed into a server at a steady rate, each row's
priority read back as soon as it is there.

Starts ``chroma-server`` on ``--store`` (SQLite by default), loads ``--train`` labelled
training rows (100 Gaussian classes in 128 dimensions), turns scoring on arrival on and
waits for its model, then streams triage rows through ``space.stream()`` at ``--rate`` rows
a second for ``--seconds`` (calls of ``--batch`` rows, each with an inference, one in ten
wrong). A poller reads the priorities of one call in ten by id every 20 ms. Reported:

- the rate reached, and each call's time from add to acknowledgement (p50, p99);
- how long after its acknowledgement a row's priority was readable (p50, p99, max), over
  the sampled calls;
- the server's resident memory (VmRSS) at the start of streaming, at its end, its peak,
  and its slope over the second half of the run (flat memory: about 0 MB/min).

No peer has this: chromadb and LanceDB store rows but compute nothing on arrival.

    .venv/bin/python bench/online_scoring.py --train 1000000 --rate 20000 --seconds 600
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from machine import cpu_model
from ours import FOREIGN, start_server

from chroma_client import Client

CLASSES = 100


def rows(n: int, dim: int, seed: int, means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, len(means), n)
    x = means[classes] + rng.normal(0, 0.6, size=(n, dim))
    return x.astype(np.float32), classes


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--rate", type=float, default=20_000, help="triage rows a second")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--batch", type=int, default=500, help="rows a call")
    parser.add_argument("--store", default="sqlite", choices=("sqlite", "clickhouse"))
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="chroma-online-"))
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN} | {"CHROMA_STORE": args.store}
    process, url = start_server(scratch / "data", scratch / "server.log", env)
    result: dict = {
        "machine": {"arch": platform.machine(), "cores": os.cpu_count(), "cpu": cpu_model()},
        "store": args.store, "train": args.train, "dim": args.dim, "rate": args.rate,
        "seconds": args.seconds, "batch": args.batch,
    }  # fmt: skip
    try:
        client = Client(url)
        space = client.space("online")
        means = np.random.default_rng(0).normal(0, 1, size=(CLASSES, args.dim))
        started = time.perf_counter()
        for at in range(0, args.train, 200_000):
            n = min(200_000, args.train - at)
            x, classes = rows(n, args.dim, seed=at + 1, means=means)
            space.add(x, dataset="train", labels=[f"c{c}" for c in classes],
                      ids=[f"t{at + i}" for i in range(n)], progress=False)  # fmt: skip
        space.wait_for_index()
        result["load_s"] = round(time.perf_counter() - started, 1)
        print(f"loaded {args.train:,} training rows in {result['load_s']} s", file=sys.stderr)
        started = time.perf_counter()
        space.score_on_arrival()
        while (space.priority_status()["online"] or {}).get("model") is None:
            time.sleep(0.2)
        result["model_s"] = round(time.perf_counter() - started, 1)
        print(f"model built in {result['model_s']} s", file=sys.stderr)
        result |= stream(space, args, means, process.pid)
        status = space.priority_status()
        result["unscored_at_end"] = status["unscored"]
        result["online_status"] = status["online"]
        client.close()
    finally:
        process.terminate()
        process.wait(timeout=120)
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


def stream(space, args, means: np.ndarray, pid: int) -> dict:
    calls = int(args.rate * args.seconds) // args.batch
    interval = args.batch / args.rate
    acked: dict[int, float] = {}
    ack_ms: list[float] = []
    seen_ms: list[float] = []
    sampled: dict[int, list[str]] = {}
    lock = threading.Lock()
    done = threading.Event()
    memory: list[tuple[float, float]] = []

    def poll() -> None:
        """Every 20 ms, one read of the scores of the sampled calls acknowledged and not yet
        seen complete."""
        while not done.is_set():
            with lock:
                # the oldest 100 calls waiting: one read of at most 100 × batch ids
                waiting = dict(sorted((n, ids) for n, ids in sampled.items() if n in acked)[:100])
            if waiting:
                wanted = [i for ids in waiting.values() for i in ids]
                found = set(space.priorities(n=None, where={"id": {"$in": wanted}})["id"])
                now = time.perf_counter()
                with lock:
                    for n, ids in waiting.items():
                        if found.issuperset(ids):
                            seen_ms.append((now - acked[n]) * 1000)
                            sampled.pop(n)
            time.sleep(0.02)

    def watch_memory() -> None:
        while not done.is_set():
            memory.append((time.perf_counter(), rss_mb(pid)))
            time.sleep(1.0)

    threads = [threading.Thread(target=poll), threading.Thread(target=watch_memory)]
    for thread in threads:
        thread.start()
    start = time.perf_counter()
    with space.stream() as stream_:
        for n in range(calls):
            due = start + n * interval
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            x, classes = rows(args.batch, args.dim, seed=10_000_000 + n, means=means)
            wrong = np.random.default_rng(n).random(args.batch) < 0.1
            inference = np.where(wrong, (classes + 1) % CLASSES, classes)
            ids = [f"q{n}-{i}" for i in range(args.batch)]
            sent = time.perf_counter()

            def on_ack(future, n=n, sent=sent) -> None:
                now = time.perf_counter()
                if future.exception() is None:
                    with lock:
                        acked[n] = now
                        ack_ms.append((now - sent) * 1000)

            if n % 10 == 0:
                with lock:
                    sampled[n] = ids
            future = stream_.add(x, ids=ids, dataset="prod", context="triage",
                                 inferences=[f"c{c}" for c in inference])  # fmt: skip
            future.add_done_callback(on_ack)
        stream_.flush()
    streamed = time.perf_counter() - start
    # scores still to come are waited for two minutes at most
    deadline = time.perf_counter() + 120
    while sampled and time.perf_counter() < deadline:
        time.sleep(0.1)
    done.set()
    for thread in threads:
        thread.join()
    rows_sent = calls * args.batch
    times = np.array([t for t, _ in memory])
    mb = np.array([m for _, m in memory])
    half = times >= times[0] + (times[-1] - times[0]) / 2
    slope = float(np.polyfit(times[half] / 60, mb[half], 1)[0]) if half.sum() > 2 else float("nan")
    out = {
        "rows_streamed": rows_sent,
        "rate_reached": round(rows_sent / streamed),
        "ack_p50_ms": round(float(np.percentile(ack_ms, 50)), 1),
        "ack_p99_ms": round(float(np.percentile(ack_ms, 99)), 1),
        "score_readable_after_ack_ms": {
            "calls_sampled": len(seen_ms),
            "not_seen_within_2_min_of_the_end": len(sampled),
            "p50": _percentile(seen_ms, 50),
            "p99": _percentile(seen_ms, 99),
            "max": _percentile(seen_ms, 100),
        },
        "server_rss_mb": {
            "start": round(float(mb[0]), 1),
            "end": round(float(mb[-1]), 1),
            "peak": round(float(mb.max()), 1),
            "slope_second_half_mb_per_min": round(slope, 2),
        },
    }
    print(json.dumps(out, indent=1), file=sys.stderr)
    return out


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


if __name__ == "__main__":
    main()
