"""``chroma load`` throughput and memory: one Parquet and one CSV file, loaded embedded and
against a server started here; prints rows/s and seconds as the command reports them (rows
stored), the whole process's seconds (embedded, it also finishes the index before exit),
and the peak memory of the loading process beside the file's size.

    .venv/bin/python bench/cli_load.py                      # 500,000 x 128
    .venv/bin/python bench/cli_load.py --rows 2000000 --dim 256 --formats parquet
"""

from __future__ import annotations

import argparse
import json
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
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from arguments import sized_parser

BIN = Path(sys.executable).parent
CHUNK = 100_000


def write_files(directory: Path, rows: int, dim: int, formats: list[str]) -> None:
    """Files of ``rows`` random vectors with an id, a label and a metadata column, written
    a chunk at a time so that the writer holds little."""
    rng = np.random.default_rng(0)
    paths = {kind: directory / f"rows.{kind}" for kind in formats}
    writers: dict = {}
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        x = rng.normal(size=(n, dim)).astype(np.float32)
        base = {
            "id": pa.array([f"r{i}" for i in range(start, start + n)]),
            "label": pa.array(rng.integers(0, 10, n)),
            "score": pa.array(rng.random(n)),
        }
        if "parquet" in paths:
            table = pa.table(
                {**base, "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), dim)}
            )
            if "parquet" not in writers:
                writers["parquet"] = pq.ParquetWriter(paths["parquet"], table.schema)
            writers["parquet"].write_table(table)
        if "csv" in paths:
            table = pa.table({**base, **{f"e{j}": x[:, j] for j in range(dim)}})
            if "csv" not in writers:
                writers["csv"] = pa_csv.CSVWriter(paths["csv"], table.schema)
            writers["csv"].write_table(table)
    for writer in writers.values():
        writer.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(path: Path, kind: str, where: list[str]) -> dict:
    args = [str(BIN / "chroma"), "load", "bench", str(path), "--dataset", "bench", "--json"]
    args += ["--metadata-column", "score", "--no-progress", *where]
    if kind == "csv":
        args += ["--embedding-columns", "e"]
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(args, stdout=out, stderr=err, text=True)
        # wait4 gives this child's own peak memory (a server child is not counted)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if process.returncode:
            raise SystemExit(err.read())
        summary = json.loads(out.read())
    return {**summary, "wall": wall, "peak_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = sized_parser(__doc__.split("\n\n")[0], rows=500_000)
    parser.add_argument("--formats", default="parquet,csv")
    parser.add_argument("--modes", default="embedded,http")
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    formats = options.formats.split(",")
    if options.write:
        write_files(options.write, options.rows, options.dim, formats)
        return
    print(
        f"{options.rows:,} x {options.dim} float32, {os.cpu_count()} cores "
        f"{platform.machine()}, {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory(prefix="chroma-cli-bench-") as tmp:
        directory = Path(tmp)
        # written by a child process: a child's peak memory counts its parent's at fork,
        # so this process stays small
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--write",
                str(directory),
                "--rows",
                str(options.rows),
                "--dim",
                str(options.dim),
                "--formats",
                options.formats,
            ],
            check=True,
        )
        paths = {kind: directory / f"rows.{kind}" for kind in formats}
        print(
            f"{'format':8} {'mode':9} {'rows/s':>10} {'seconds':>8} {'process':>8} "
            f"{'file MB':>8} {'peak MB':>8}"
        )
        for kind, path in paths.items():
            for mode in options.modes.split(","):
                data = directory / f"data-{kind}-{mode}"
                server = None
                if mode == "http":
                    port = free_port()
                    server = subprocess.Popen(
                        [str(BIN / "chroma"), "run", "--port", str(port), "--path", str(data)],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    url = f"http://127.0.0.1:{port}"
                    _wait(url)
                    where = ["--url", url]
                else:
                    where = ["--path", str(data)]
                try:
                    result = load(path, kind, where)
                finally:
                    if server is not None:
                        server.terminate()
                        server.wait()
                print(
                    f"{kind:8} {mode:9} {result['rows_per_second']:10,.0f} "
                    f"{result['seconds']:8.1f} {result['wall']:8.1f} "
                    f"{path.stat().st_size / 2**20:8.0f} "
                    f"{result['peak_mb']:8.0f}"
                )


def _wait(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("the server did not start")


if __name__ == "__main__":
    main()
