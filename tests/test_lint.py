"""Lint and types hold for the whole tree, as `./dev lint` checks them: ruff over every
file, mypy over every package (core, wire, client, command line and each plugin's)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def packages() -> list[str]:
    found = ["chroma_core", "chroma_cli", "wire/chroma_wire", "client/chroma_client"]
    for folder in ("plugins", "examples"):
        found += sorted(
            p.relative_to(ROOT).as_posix()
            for p in (ROOT / folder).glob("*/chroma_*")
            if p.is_dir() and not p.name.endswith(".egg-info")
        )
    return found


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True)


def test_ruff_finds_nothing_and_every_file_is_formatted():
    check = run(str(BIN / "ruff"), "check", ".")
    assert check.returncode == 0, check.stdout[-3000:]
    form = run(str(BIN / "ruff"), "format", "--check", ".")
    assert form.returncode == 0, form.stdout[-3000:]


def test_mypy_covers_every_package_and_finds_nothing():
    names = packages()
    assert any(n.startswith("plugins/") for n in names) and "wire/chroma_wire" in names
    result = run(str(BIN / "mypy"), *names)
    assert result.returncode == 0, result.stdout[-3000:]


def test_ruff_knows_every_package_of_the_tree_as_first_party():
    text = (ROOT / "pyproject.toml").read_text()
    listed = text[text.index("known-first-party") :].split("]")[0]
    for name in packages():
        assert f'"{Path(name).name}"' in listed, f"{Path(name).name} is not first-party to ruff"
