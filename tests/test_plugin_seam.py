"""The core knows hook specs, never plugins: built-ins are found like anyone's plugin."""

from __future__ import annotations

import ast
from importlib.metadata import entry_points
from pathlib import Path

import chroma_core
from chroma_core import hookspecs

CORE = Path(chroma_core.__file__).parent


def test_core_never_imports_a_plugin():
    plugin_modules = {ep.value.split(".")[0] for ep in entry_points(group="chroma")}
    assert {
        "chroma_store_sqlite",
        "chroma_algo_similarity",
        "chroma_algo_priority",
    } <= plugin_modules
    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in plugin_modules, f"{path.name} imports {name}"


def test_built_in_plugins_come_from_the_chroma_entry_point_group():
    names = {ep.name for ep in entry_points(group="chroma")}
    assert {"store_sqlite", "algo_similarity", "algo_priority", "triggers"} <= names


def test_every_hook_is_prefixed_and_documented():
    specs = [name for name in dir(hookspecs) if name.startswith("chroma_")]
    assert len(specs) >= 6
    for name in specs:
        assert getattr(hookspecs, name).__doc__, name
