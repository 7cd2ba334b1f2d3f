"""How compare.py and a system's runner talk.

compare.py starts each runner as a subprocess, one after another, with three arguments: the
system's name, the workload directory (.npy files and spec.json, see workload.py) and a fresh
scratch directory of its own. The runner keeps its data under ``scratch/data`` (what "disk
bytes" measures) and anything else (server logs) beside it, reports progress on stderr and
prints one JSON object on stdout:

    {"settings": {...}, "versions": {...}, "notes": [...],
     "ingest_s", "index_s", "disk_after_load", "disk_at_close": numbers or null,
     "knn": {"latencies_s": [...], "rows": [[row, ...], ...], "method": str},
     "batch": {"seconds": s, "rows": [[...], ...]},
     "filtered": {"latencies_s": [...], "rows": [[...], ...], "method": str},
     "get_filter": {"seconds": s, "rows": n}, "get_ids": {"seconds": s, "rows": n}}

``rows`` are the row numbers found (id ``r{i}`` is row ``i``), nearest first; compare.py
scores them against exact search. bench/reference_chromadb.py repeats the few lines it needs
of this module, since it runs in another environment and imports only chromadb and numpy.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np


def load(directory: Path) -> tuple[dict, dict[str, np.ndarray]]:
    spec = json.loads((directory / "spec.json").read_text())
    arrays = {p.stem: np.load(p) for p in directory.glob("*.npy")}
    return spec, arrays


def disk_bytes(path: Path) -> int:
    """Bytes allocated under ``path``, as ``du`` counts them."""
    return sum(f.lstat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def row_numbers(ids) -> list[int]:
    return [int(i[1:]) for i in ids]


def log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def main(run: Callable[[str, dict, dict[str, np.ndarray], Path], dict]) -> None:
    """Parse the runner's arguments, call ``run(system, spec, arrays, scratch)`` and print its
    result as the only line on stdout: whatever else is printed, by the runner or by a
    library, goes to stderr."""
    system, workload, scratch = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    result_stream = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    spec, arrays = load(workload)
    result = run(system, spec, arrays, scratch)
    result_stream.write(json.dumps(result) + "\n")
    result_stream.flush()
