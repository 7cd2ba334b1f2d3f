"""Back-up and restore speed: ``client.export_to`` and ``client.import_from`` on each store.

    .venv/bin/python bench/backup.py                      # 200,000 x 128, SQLite and ClickHouse
    .venv/bin/python bench/backup.py --rows 20000 --stores sqlite

Per store, embedded: load ``--rows`` embeddings (90% labelled training, 10% triage with
model outputs, metadata on every row), score priorities and record two triggers; then
export the space, and import the back-up into a fresh store of the same kind. Prints rows
per second both ways, the back-up's bytes on disk per row (and the store's, for scale), and
checks that the imported space holds the same rows, scores and triggers. ClickHouse runs as
the embedded chdb engine. The k-NN index is built lazily (on a first query, which never
comes), so no index build runs beside the timings: an import's rows are searchable when it
returns and indexed in the background after, as after any add.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from arguments import sized_parser

from chroma_client import Client


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def open_client(store: str, path: Path, chdb: Path) -> Client:
    os.environ["CHROMA_SIMILARITY_BUILD"] = "lazy"
    os.environ["CHROMA_STORE"] = store
    os.environ["CHROMA_CLICKHOUSE_DSN"] = f"chdb://{chdb}"
    os.environ["CHROMA_CLICKHOUSE_DATABASE"] = f"bench_{path.name}"
    return Client(path=path)


def load(client: Client, rows: int, dim: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    space = client.space("bench", metric="l2", model={"name": "bench", "dim": dim})
    training = rows * 9 // 10
    step = 50_000
    bounds = sorted({*range(0, rows, step), training, rows})
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        n = stop - start
        vectors = rng.standard_normal((n, dim)).astype(np.float32)
        ids = [f"row-{i}" for i in range(start, stop)]
        metadata = [{"i": i, "batch": start // step} for i in range(start, stop)]
        uris = [f"s3://bench/{i}.jpg" for i in range(start, stop)]
        if stop <= training:
            labels = rng.integers(0, 10, n).astype(str).tolist()
            space.add(vectors, dataset="train", labels=labels, input_uris=uris,
                      metadata=metadata, ids=ids)  # fmt: skip
        else:
            inferences = rng.integers(0, 10, n).astype(str).tolist()
            outputs = rng.dirichlet(np.ones(10), n).astype(np.float32)
            space.add(vectors, dataset="prod", context="triage", inferences=inferences,
                      outputs=outputs, input_uris=uris, metadata=metadata, ids=ids)  # fmt: skip
    space.compute_priorities(k=10)
    space.trigger_retraining(n=500, note="bench")
    space.trigger_retraining(n=200, strategy="diverse")


def run(store: str, rows: int, dim: int, tmp: Path) -> dict:
    chdb = tmp / "chdb"
    source = open_client(store, tmp / "source", chdb)
    started = time.perf_counter()
    load(source, rows, dim)
    loaded = time.perf_counter() - started
    print(f"{store}: loaded in {loaded:.0f} s", file=sys.stderr)
    store_bytes = directory_bytes(tmp / "source") + (
        directory_bytes(chdb) if store == "clickhouse" else 0
    )

    started = time.perf_counter()
    manifest = source.export_to(tmp / "backup", progress=False)
    exported = time.perf_counter() - started
    backup_bytes = directory_bytes(tmp / "backup")

    target = open_client(store, tmp / "target", chdb)
    started = time.perf_counter()
    summary = target.import_from(tmp / "backup", progress=False)
    imported = time.perf_counter() - started

    a, b = source.space("bench"), target.space("bench")
    assert summary["rows"] == rows == b.count()
    probe = [f"row-{i}" for i in range(0, rows, max(1, rows // 1000))]
    assert np.array_equal(a.embeddings(ids=probe)[1], b.embeddings(ids=probe)[1])
    assert a.priorities(n=1000).equals(b.priorities(n=1000))
    assert source.triggers()["count"].tolist() == target.triggers()["count"].tolist()
    source.close()
    target.close()
    entry = manifest["spaces"][0]
    return {
        "store": store,
        "load s": loaded,
        "export s": exported,
        "import s": imported,
        "export rows/s": rows / exported,
        "import rows/s": rows / imported,
        "back-up B/row": backup_bytes / rows,
        "store B/row": store_bytes / rows,
        "files": len(entry["files"]),
        "priorities": entry["priorities"],
        "trigger items": entry["trigger_items"],
    }


def main() -> None:
    parser = sized_parser(__doc__.split("\n")[0], rows=200_000)
    parser.add_argument("--stores", default="sqlite,clickhouse")
    parser.add_argument("--tmp", help="where the temporary stores go (default: the system's)")
    args = parser.parse_args()
    results = []
    for store in args.stores.split(","):
        tmp = Path(tempfile.mkdtemp(prefix=f"chroma-backup-{store}-", dir=args.tmp))
        try:
            results.append(run(store, args.rows, args.dim, tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"{args.rows:,} embeddings x {args.dim}, {os.cpu_count()} cores {platform.machine()}, "
        f"Python {platform.python_version()}"
    )
    keys = [k for k in results[0] if k != "store"]
    print(f"{'':24}" + "".join(f"{r['store']:>14}" for r in results))
    for key in keys:
        cells = "".join(
            f"{r[key]:>14,.0f}" if r[key] >= 100 else f"{r[key]:>14,.1f}" for r in results
        )
        print(f"{key:24}{cells}")


if __name__ == "__main__":
    main()
