"""Streaming ingest: producer threads adding small batches through ``space.stream()``,
beside chromadb's ``collection.add`` from as many threads, in one run on the same rows.

Every row carries the full catalogue as Python lists (id, dataset, context, input URI,
inference, label; bench/stream_producers.py). Two phases for each system:

- **throughput**: the producers add as fast as they can; rows/s from the first add to the
  last acknowledgement;
- **latency**: the producers pace their calls to ``--paced-share`` (default half) of the
  throughput just measured; each call's time from when it was due to its acknowledgement,
  p50 and p99.

A call to our stream returns at once and its future resolves when the server has stored
its rows; chromadb's add returns once stored, so its latency includes the wait of a producer
whose previous add has not returned.

    .venv/bin/python bench/stream.py --rows 400000 --producers 8 --batch 100
    .venv/bin/python bench/stream.py --systems chroma-sqlite-http,chromadb-http --json out.json

chromadb runs in bench/.venv-reference (bench/reference-requirements.txt), made on first
use, as for ``./dev bench``. The machine's speed swings from run to run: read the ratios.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import stream_producers
from machine import cpu_model
from ours import FOREIGN, start_server
from reference_env import reference_python

from chroma_client import Client

HERE = Path(__file__).resolve().parent
SYSTEMS = ("chroma-sqlite-embedded", "chroma-sqlite-http", "chromadb-embedded", "chromadb-http")


def ours(system: str, args, scratch: Path) -> dict:
    store, mode = system.split("-")[1:]
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN} | {"CHROMA_STORE": store}
    process = None
    if mode == "http":
        process, url = start_server(scratch / "data", scratch / "server.log", env)
        client = Client(url)
    else:
        os.environ.update(env)
        client = Client(path=scratch / "data")
    try:
        out = {}
        rows = stream_producers.data(args.rows, args.dim)
        for phase in ("throughput", "latency"):
            space = client.space(f"live_{phase}")
            with space.stream() as stream:

                def add(lo: int, hi: int, stream=stream):
                    acknowledged = threading.Event()
                    when: list[float] = []

                    def done(_):
                        when.append(time.perf_counter())
                        acknowledged.set()

                    future = stream.add(rows[lo:hi], dataset="live", context="triage",
                                        **stream_producers.catalogue(lo, hi))  # fmt: skip
                    future.add_done_callback(done)

                    def wait() -> float:
                        acknowledged.wait()
                        future.result()
                        return when[0]

                    return wait

                rate = None
                if phase == "latency":
                    rate = out["throughput"]["rows_per_s"] * args.paced_share
                seconds, latencies = stream_producers.run(
                    add, args.rows, args.producers, args.batch, rate
                )
                out[phase] = stream_producers.summary(seconds, args.rows, latencies)
                out[phase]["requests"] = stream.batches
                if rate:
                    out[phase]["paced_rows_per_s"] = round(rate)
            assert space.count() == args.rows
            print(f"{system} {phase}: {out[phase]}", file=sys.stderr, flush=True)
        return out
    finally:
        client.close()
        if process is not None:
            process.terminate()
            process.wait(timeout=120)


def chromadb(system: str, args, scratch: Path) -> dict:
    python = reference_python(HERE / ".venv-reference", HERE / "reference-requirements.txt")
    command = [str(python), str(HERE / "reference_stream_chromadb.py"), system.split("-")[1],
               str(scratch), str(args.rows), str(args.dim), str(args.producers),
               str(args.batch), str(args.paced_share)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=HERE)
    sys.stderr.write(done.stderr[-2000:])
    if done.returncode != 0:
        raise RuntimeError(f"{system} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--producers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=100, help="rows a producer adds a call")
    parser.add_argument("--paced-share", type=float, default=0.5)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    systems = args.systems.split(",")
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    result: dict = {
        "machine": {"arch": platform.machine(), "cores": os.cpu_count(), "cpu": cpu_model()},
        "rows": args.rows, "dim": args.dim, "producers": args.producers, "batch": args.batch,
        "systems": {},
    }  # fmt: skip
    for system in systems:
        scratch = Path(tempfile.mkdtemp(prefix="chroma-stream-"))
        try:
            run = chromadb if system.startswith("chromadb") else ours
            result["systems"][system] = run(system, args, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
