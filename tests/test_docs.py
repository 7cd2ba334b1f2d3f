"""The docs cannot drift from the code: every module, hook and operation the code has is in
docs/architecture.md or docs/protocol.md, and every one named there exists."""

from __future__ import annotations

import re
from pathlib import Path

from chroma_core import hookspecs
from chroma_wire.operations import markdown_table

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text()
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text()
# the packages whose modules the architecture's module table names, by their folder
PACKAGES = (ROOT / "chroma_core", ROOT / "wire" / "chroma_wire", ROOT / "client" / "chroma_client")


def section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def first_cells(table_text: str) -> list[str]:
    """The first column of every row of the Markdown tables in ``table_text``, without the
    backticks: a module path, a folder path ending in '/', or a hook's signature."""
    cells = []
    for line in table_text.splitlines():
        match = re.match(r"\|\s*`([^`]+)`", line)
        if match:
            cells.append(match.group(1))
    return cells


def test_the_operations_table_is_made_from_the_declarations():
    block = re.search(r"<!-- operations:start -->\n(.*)<!-- operations:end -->", PROTOCOL, re.S)
    assert block is not None, "docs/protocol.md lost its operations block"
    assert block.group(1) == markdown_table(), (
        "docs/protocol.md's operations table differs from chroma_wire/operations.py: "
        "paste the output of chroma_wire.operations.markdown_table() between the markers"
    )


def test_every_module_is_in_the_module_table_and_every_row_exists():
    named = first_cells(section(ARCHITECTURE, "Modules"))
    paths = [name.rstrip("/") for name in named]
    for name in paths:
        assert (
            (ROOT / name).exists()
            or (ROOT / "wire" / name).exists()
            or (ROOT / "client" / name).exists()
        ), f"docs/architecture.md names {name}, which does not exist"
    for package in PACKAGES:
        for module in sorted(package.rglob("*.py")):
            relative = module.relative_to(package.parent).as_posix()
            if module.name == "__init__.py" and module.parent == package:
                continue
            covered = [
                p for p in paths if relative == p or relative.startswith(p + "/") or p == relative
            ]
            assert covered, f"{relative} is missing from the module table of docs/architecture.md"


def test_every_hook_is_in_the_hooks_table_and_every_row_is_a_hook():
    documented = {cell.split("(")[0] for cell in first_cells(section(ARCHITECTURE, "Hooks"))}
    specs = {name for name in dir(hookspecs) if name.startswith("chroma_")}
    assert specs - documented == set(), "hooks missing from docs/architecture.md"
    assert documented - specs == set(), "docs/architecture.md names hooks that do not exist"
