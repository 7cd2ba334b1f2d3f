"""Producer threads adding small batches with the full catalogue, as a production pipeline
logs them: shared by bench/stream.py (Chroma's ``space.stream()``) and
bench/reference_stream_chromadb.py (chromadb's ``collection.add`` from as many threads).

Imports only numpy and the standard library, so it runs in the reference environment too.
Row ``i`` has id ``s{i}``, dataset ``live``, context ``triage``, an input URI, an inference
and a label, each a Python list per call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

LABELS = ("cat", "dog", "bird", "fish")


def catalogue(lo: int, hi: int) -> dict[str, list[str]]:
    ids = [f"s{i}" for i in range(lo, hi)]
    return {
        "ids": ids,
        "input_uris": [f"s3://bucket/prod/{i}.jpg" for i in ids],
        "inferences": [LABELS[i % 4] for i in range(lo, hi)],
        "labels": [LABELS[(i // 3) % 4] for i in range(lo, hi)],
    }


def data(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = rng.normal(size=(rows, dim)).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def run(
    add: Callable[[int, int], Callable[[], float] | None],
    rows: int,
    producers: int,
    batch: int,
    rate: float | None = None,
) -> tuple[float, list[float]]:
    """``producers`` threads share rows ``0..rows`` in calls of ``batch`` rows: producer p
    adds the calls p, p + producers, ... ``add(lo, hi)`` adds one call and returns a
    function that waits for its acknowledgement and returns when it came (perf_counter), or
    None when the add returned only once acknowledged. ``rate``: rows per second over all
    producers, each pacing its calls (None: as fast as they go). Returns the seconds from
    the first add to the last acknowledgement, and each call's latency from the moment it
    was due to its acknowledgement."""
    calls = [(lo, min(rows, lo + batch)) for lo in range(0, rows, batch)]
    latencies: list[float] = []
    waits: list[tuple[float, Callable[[], float]]] = []
    lock = threading.Lock()
    start = time.perf_counter() + 0.05

    def produce(p: int) -> None:
        for n in range(p, len(calls), producers):
            due = start + (n * batch / rate if rate else 0.0)
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            sent = max(due, time.perf_counter()) if rate else time.perf_counter()
            wait = add(*calls[n])
            with lock:
                if wait is None:
                    latencies.append(time.perf_counter() - sent)
                else:
                    waits.append((sent, wait))

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for sent, wait in waits:
        latencies.append(wait() - sent)
    end = time.perf_counter()
    return end - start, latencies


def summary(seconds: float, rows: int, latencies: list[float]) -> dict:
    ms = np.array(latencies) * 1000
    return {
        "rows": rows,
        "rows_per_s": round(rows / seconds),
        "ack_p50_ms": round(float(np.percentile(ms, 50)), 1),
        "ack_p99_ms": round(float(np.percentile(ms, 99)), 1),
    }
