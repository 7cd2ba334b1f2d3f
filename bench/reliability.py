"""Long crash and concurrency rounds against real chroma-server processes; prints figures.

    .venv/bin/python bench/reliability.py                      # both stores, default rounds
    .venv/bin/python bench/reliability.py --store sqlite --kills 300 --seconds 120

Four parts per store, each from tests/reliability.py (the test suite runs short seeded
rounds of the same):

- crash: writer processes add batches while the server is SIGKILLed ``--kills`` times at
  seeded random moments and restarted on the same data directory; before each kill the
  priorities are computed and a trigger recorded, and every other round a background
  priority computation is started just before the kill. Every batch is checked at the end
  (acknowledged ones whole and identical, unacknowledged ones whole or absent), and every
  stored row is searched for by its own vector.
- index saves: kills timed to land while the similarity index is being saved, a page of the
  saved file lost in every other round.
- priorities: kills during background priority computations of a larger space.
- concurrency: ``--writers`` and ``--readers`` processes on one server for ``--seconds``.

Needs the test environment (``./dev test`` installs it, with the embedded ClickHouse engine).
Exits 1 if any check found a problem.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import reliability  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--store", default="sqlite,clickhouse", help="comma-separated stores")
    parser.add_argument("--kills", type=int, default=100, help="crash rounds per store")
    parser.add_argument("--crash-writers", type=int, default=4)
    parser.add_argument("--save-kills", type=int, default=20, help="kills during index saves")
    parser.add_argument("--save-rows", type=int, default=30_000)
    parser.add_argument("--priority-kills", type=int, default=20)
    parser.add_argument("--priority-rows", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=60.0, help="concurrency run length")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--parts", default="crash,saves,priorities,concurrency")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tmp", help="directory for data (default: a new temporary one)")
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args()

    parts = args.parts.split(",")
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="chroma-reliability-"))
    print(f"command: bench/reliability.py {shlex.join(sys.argv[1:])}")
    print(
        f"machine: {os.cpu_count()} cores {platform.machine()}, Python {platform.python_version()}"
    )
    print(f"data under {tmp}\n", flush=True)
    results = []
    for store in args.store.split(","):
        runs = {
            "crash": lambda d, s=store: reliability.crash_rounds(
                s, d, rounds=args.kills, writers=args.crash_writers, seed=args.seed
            ),
            "saves": lambda d, s=store: reliability.index_save_rounds(
                s, d, rounds=args.save_kills, rows=args.save_rows, seed=args.seed
            ),
            "priorities": lambda d, s=store: reliability.priority_kill_rounds(
                s, d, rounds=args.priority_kills, rows=args.priority_rows, seed=args.seed
            ),
            "concurrency": lambda d, s=store: reliability.concurrency_run(
                s,
                d,
                writers=args.writers,
                readers=args.readers,
                seconds=args.seconds,
                seed=args.seed,
            ),
        }
        for part in parts:
            started = time.monotonic()
            figures = runs[part](tmp / f"{store}-{part}")
            wall = time.monotonic() - started
            show(part, figures, wall)
            # asdict() would turn each Counter's items into keys of a new Counter
            results.append({"part": part, "wall_s": wall, **_plain(vars(figures))})
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    failed = [r for r in results if r["problems"]]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def _plain(values: dict) -> dict:
    return {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}


def show(part: str, f: reliability.Figures, wall: float) -> None:
    print(f"== {f.store}: {part} ({wall:.0f} s)")
    if part == "concurrency":
        ops = f.operations
        reads = sum(v for k, v in ops.items() if k not in ("add", "rows added", "rows read"))
        print(f"  processes at once        {f.processes}")
        print(f"  run                      {f.seconds:.1f} s")
        rate = (
            f"{ops['add'] / f.seconds:,.1f} batches/s, {ops['rows added'] / f.seconds:,.0f} rows/s"
        )
        added = f"{ops['add']:,} batches, {ops['rows added']:,} rows"
        print(f"  adds acknowledged        {added} ({rate})")
        print(f"  reads                    {reads:,} ({reads / f.seconds:,.1f}/s): {dict(ops)}")
        print(f"  rows read by readers     {ops['rows read']:,}")
        print(f"  rows checked after       {f.rows_checked:,}")
    else:
        print(f"  kills survived           {f.rounds} of {f.kills}")
        print(
            f"  batches acknowledged     {f.batches_acked:,} (all whole and identical)"
            if f.batches_acked
            else "  batches acknowledged     0"
        )
        print(
            f"  batches in doubt         {f.batches_unknown_present:,} stored whole, "
            f"{f.batches_unknown_absent:,} absent, none in part"
        )
        print(f"  rows checked             {f.rows_checked:,}")
        if f.rows_queried:
            print(
                f"  rows searched by vector  {f.rows_queried:,} "
                f"({f.rows_unfound} not found: HNSW leaves a rare node unreachable)"
            )
        if f.scores_checked:
            print(f"  scores checked           {f.scores_checked:,}")
        if f.triggers_checked:
            print(f"  triggers checked         {f.triggers_checked:,}")
        for outcome, n in sorted(f.outcomes.items()):
            print(f"  {outcome:<24} {n}")
    print(f"  client errors            {dict(f.errors) or 'none'}")
    print(f"  problems                 {len(f.problems)}")
    for problem in f.problems[:20]:
        print(f"    {problem}")
    print(flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
