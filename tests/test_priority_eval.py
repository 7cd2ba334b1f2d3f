"""The evaluation of priority and label quality runs end to end on tiny synthetic data with our
venv alone (no reference environment, nothing downloaded) and reports every metric for ours and
the numpy baselines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METRICS = ["auroc", "ap", "p_at_1pct", "p_at_5pct"]


def test_evaluate_tiny_prints_tables_and_writes_json(tmp_path):
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "priority" / "evaluate.py"), "--tiny"]
        + ["--tmp", str(tmp_path), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    text = run.stdout
    assert "command: bench/priority/evaluate.py --tiny" in text
    assert "cores" in text
    for label in [
        "(a) triage inputs the model got wrong",
        "(b) training inputs whose label was flipped",
        "ours: priority (with outputs)",
        "k-NN disagreement alone",
        "distance alone (distance_pct)",
        "1 - max probability",
        "random",
        "AUROC",
        "P@5%",
    ]:
        assert label in text

    results = json.loads(out.read_text())
    assert results["metrics"] == METRICS
    synthetic = results["datasets"]["synthetic"]
    assert synthetic["wrong"] > 0 and synthetic["flipped"] == 60
    for ranker in ["ours", "random", "disagreement", "distance_pct", "one_minus_max_prob"]:
        row = synthetic["triage"][ranker]
        assert set(row) == set(METRICS)
        assert all(0.0 <= row[m] <= 1.0 for m in METRICS)
    assert synthetic["triage"]["ours"]["auroc"] > synthetic["triage"]["random"]["auroc"]
    assert set(synthetic["training"]["random"]) == set(METRICS)
    # cleanlab runs only in the reference environment, which --tiny leaves out
    assert synthetic["training"]["datalab_label"] is None
    if synthetic["label_quality_found"]:
        assert synthetic["training"]["ours"]["auroc"] > 0.8
        assert "ours: label_quality issue_score" in text
