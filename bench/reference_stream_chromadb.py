"""chromadb's side of bench/stream.py: producer threads calling ``collection.add`` with
small batches and the full catalogue (as metadata), embedded or over HTTP.

Runs in bench/.venv-reference, imports only chromadb, numpy and the standard library:

    bench/.venv-reference/bin/python bench/reference_stream_chromadb.py MODE SCRATCH ROWS DIM
        PRODUCERS BATCH PACED_SHARE

and prints one JSON object. The add returns once chromadb has stored the rows, so a call's
latency is from when it was due to when its add returned.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import chromadb
import stream_producers
from chromadb.config import Settings
from reference_chromadb import start_server


def main() -> None:
    mode, scratch = sys.argv[1], Path(sys.argv[2])
    rows, dim, producers, batch = (int(a) for a in sys.argv[3:7])
    share = float(sys.argv[7])
    settings = Settings(anonymized_telemetry=False)
    process = None
    if mode == "http":
        process, port = start_server(scratch / "data", scratch / "server.log")
        client = chromadb.HttpClient(host="127.0.0.1", port=port, settings=settings)
    else:
        client = chromadb.PersistentClient(path=str(scratch / "data"), settings=settings)
    data = stream_producers.data(rows, dim)
    out: dict = {}
    try:
        for phase in ("throughput", "latency"):
            collection = client.create_collection(
                f"live_{phase}", configuration={"hnsw": {"space": "l2"}}, embedding_function=None
            )

            def add(lo: int, hi: int, collection=collection):
                given = stream_producers.catalogue(lo, hi)
                collection.add(
                    ids=given["ids"],
                    embeddings=data[lo:hi],
                    metadatas=[
                        {"dataset": "live", "context": "triage", "input_uri": uri,
                         "inference": inference, "label": label}
                        for uri, inference, label in zip(
                            given["input_uris"], given["inferences"], given["labels"],
                            strict=True)
                    ],
                )  # fmt: skip
                return None

            rate = out["throughput"]["rows_per_s"] * share if phase == "latency" else None
            seconds, latencies = stream_producers.run(add, rows, producers, batch, rate)
            out[phase] = stream_producers.summary(seconds, rows, latencies)
            if rate:
                out[phase]["paced_rows_per_s"] = round(rate)
            assert collection.count() == rows
            print(f"chromadb-{mode} {phase}: {out[phase]}", file=sys.stderr, flush=True)
        out["versions"] = {"chromadb": chromadb.__version__}
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=600)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
