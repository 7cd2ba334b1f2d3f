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
        "ours: priority (inference only)",
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
    rankers = ["ours", "ours_no_outputs", "random", "disagreement", "distance_pct"]
    for ranker in [*rankers, "one_minus_max_prob"]:
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


def run_evaluate(tmp_path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "priority" / "evaluate.py"), "--tiny"]
        + ["--tmp", str(tmp_path), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_evaluate_over_seeds_reports_the_mean_and_spread_of_each_seed(tmp_path):
    out = tmp_path / "results.json"
    run = run_evaluate(tmp_path, "--seeds", "0-2", "--json", str(out))
    assert run.returncode == 0, run.stderr
    assert "mean ± std over 3 seeds" in run.stdout
    results = json.loads(out.read_text())
    assert results["settings"]["seeds"] == [0, 1, 2]
    per_seed = [results["runs"][s]["synthetic"]["triage"]["ours"]["auroc"] for s in "012"]
    assert len(set(per_seed)) > 1  # each seed draws its own data
    summary = results["summary"]["synthetic"]["triage"]["ours"]["auroc"]
    assert abs(summary["mean"] - sum(per_seed) / 3) < 1e-12
    spread = (sum((v - summary["mean"]) ** 2 for v in per_seed) / 3) ** 0.5
    assert abs(summary["std"] - spread) < 1e-12
    assert f"{summary['mean']:.3f} ± {summary['std']:.3f}" in run.stdout


def test_evaluate_names_a_bad_seed_range(tmp_path):
    run = run_evaluate(tmp_path, "--seeds", "4-1")
    assert run.returncode == 2
    assert "--seeds takes A-B with A <= B" in run.stderr and "'4-1'" in run.stderr
