"""The comparison benchmark runs end to end on tiny data (our SQLite store and raw hnswlib;
chromadb is left out so nothing is downloaded) and reports every metric."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ["chroma-sqlite-embedded", "hnswlib"]


def test_compare_prints_one_table_and_writes_json(tmp_path):
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare.py"), "--rows", "2000", "--queries", "5"]
        + ["--systems", ",".join(SYSTEMS), "--tmp", str(tmp_path), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    table = run.stdout
    assert "2,000 embeddings x 128" in table
    assert "command: " in table and "--rows 2000" in table
    for label in [
        "ingest (acknowledged), rows/s",
        "index catch-up / build, s",
        "k-NN p50, ms (recall)",
        "k-NN p99, ms (recall)",
        "1,000 queries/call, q/s",
        "filtered 2.5% p50, ms",
        "get 1,950 by filter, s",
        "get 2,000 by id, ms",
        "disk B/embedding, after load",
        "sqlite emb /",
    ]:
        assert label in table

    results = json.loads(out.read_text())
    assert results["rows"] == 2000 and results["dim"] == 128
    assert {"cores", "ram_gib", "cpu"} <= results["machine"].keys()
    assert {"python", "hnswlib", "pyarrow"} <= results["versions"].keys()
    ours = results["systems"]["chroma-sqlite-embedded"]["metrics"]
    for key in [
        "ingest_rows_per_s",
        "index_s",
        "knn_p50_ms",
        "knn_p99_ms",
        "batch_qps",
        "filtered_p50_ms",
        "get_filter_s",
        "get_ids_ms",
        "disk_bytes_per_row",
    ]:
        assert ours[key] > 0
    assert ours["get_filter_rows"] == 1950 and ours["get_ids_rows"] == 2000
    hnsw = results["systems"]["hnswlib"]["metrics"]
    assert hnsw["index_s"] > 0 and "ingest_s" not in hnsw
    for metrics in (ours, hnsw):
        # a small clustered set: every system finds (nearly) every true neighbour
        for recall in ("knn_recall", "batch_recall", "filtered_recall"):
            assert metrics[recall] >= 0.9
    assert "knn_p50_ms" in results["ratios"]["chroma-sqlite-embedded / hnswlib"]
    # every scratch directory is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_backup_bench_round_trips_and_prints_its_figures(tmp_path):
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "backup.py"), "--rows", "2000", "--dim", "16"]
        + ["--stores", "sqlite", "--tmp", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "2,000 embeddings x 16" in run.stdout
    for label in ("export rows/s", "import rows/s", "back-up B/row", "store B/row"):
        assert label in run.stdout
    assert list(tmp_path.iterdir()) == []


def test_stream_bench_streams_every_row_through_both_transports(tmp_path):
    out = tmp_path / "stream.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "stream.py"), "--rows", "3000", "--dim", "16"]
        + ["--producers", "3", "--batch", "50", "--json", str(out)]
        + ["--systems", "chroma-sqlite-embedded,chroma-sqlite-http"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    results = json.loads(out.read_text())
    for system in ("chroma-sqlite-embedded", "chroma-sqlite-http"):
        phases = results["systems"][system]
        for phase in ("throughput", "latency"):
            figures = phases[phase]
            assert figures["rows"] == 3000 and figures["rows_per_s"] > 0
            assert 0 < figures["ack_p50_ms"] <= figures["ack_p99_ms"]
            # 60 calls went in fewer requests
            assert 1 <= figures["requests"] <= 60
        assert phases["latency"]["paced_rows_per_s"] == round(
            phases["throughput"]["rows_per_s"] * 0.5
        )
