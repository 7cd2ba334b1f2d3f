"""The environments reference tools run in, apart from ours: made once, kept in step with
their pinned requirements file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def reference_python(venv: Path, requirements: Path) -> Path:
    """The Python of ``venv``, created or updated from ``requirements``."""
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    wanted = requirements.read_text()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"installing {requirements.name} into {venv} ...", file=sys.stderr, flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        + ["-r", str(requirements)],
        capture_output=True,
        text=True,
    )
    if install.returncode != 0:
        raise RuntimeError(f"installing {requirements} failed:\n{install.stderr[-3000:]}")
    stamp.write_text(wanted)
    return python
