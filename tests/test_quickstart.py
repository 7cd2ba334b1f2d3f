"""The quickstart a newcomer runs first (`./dev demo`) works end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_quickstart_runs_and_fires_a_trigger(tmp_path):
    done = subprocess.run(
        # no argument: the embedded default, data in ./chroma_data
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Scored 100 inputs against 900 training inputs" in out
    assert "neighbours' labels" in out and "Training labels most likely wrong" in out
    assert "Trigger 1: 10 inputs, status pending" in out
    assert (tmp_path / "chroma_data" / "triggers" / "quickstart-1.parquet").exists()
