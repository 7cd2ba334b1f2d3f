"""The core knows hook specs, never plugins: built-ins are found like anyone's plugin."""

from __future__ import annotations

import ast
import inspect
import re
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import chroma_core
from chroma_core import hookspecs
from chroma_core.config import Settings
from chroma_core.hookspecs import hookimpl
from chroma_core.plugins import SPECS, InvalidPlugin, declared_settings, plugin_manager
from chroma_core.service import Chroma

CORE = Path(chroma_core.__file__).parent
ROOT = CORE.parent
PLUGINS = ROOT / "plugins"
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text()


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


class Misspelled:
    """A plugin with one hook name wrong by a letter."""

    @hookimpl
    def chroma_row_added(self, context, space, seqs, rows):
        raise AssertionError("never called")


class TakesTheService:
    """A plugin whose hook asks for an argument no hook passes."""

    @hookimpl
    def chroma_rows_added(self, chroma, space, seqs, rows):
        raise AssertionError("never called")


def test_a_misspelled_hook_stops_the_start_naming_the_plugin_and_the_hook(tmp_path):
    with pytest.raises(InvalidPlugin, match="Misspelled implements 'chroma_row_added'") as raised:
        plugin_manager([Misspelled()])
    assert "did you mean 'chroma_rows_added'" in raised.value.detail
    with pytest.raises(InvalidPlugin, match="chroma_row_added"):
        Chroma(Settings.from_env({}, path=tmp_path), pm=plugin_manager([Misspelled()]))


def test_a_hook_asking_for_what_no_hook_passes_stops_the_start():
    with pytest.raises(InvalidPlugin, match="TakesTheService") as raised:
        plugin_manager([TakesTheService()])
    assert "chroma_rows_added takes chroma" in raised.value.detail
    assert "passes context, space, seqs, rows" in raised.value.detail


def test_every_hook_names_its_arguments_one_way():
    meaning: dict[str, str] = {}
    for name in SPECS:
        for argument, parameter in inspect.signature(getattr(hookspecs, name)).parameters.items():
            assert parameter.annotation is not inspect.Parameter.empty, (name, argument)
            meaning.setdefault(argument, parameter.annotation)
            assert meaning[argument] == parameter.annotation, (name, argument)
    assert meaning["context"] == "PluginContext" and meaning["space"] == "SpaceInfo"


def test_every_hook_is_in_the_architecture_docs_with_its_arguments():
    rows = [line for line in ARCHITECTURE.splitlines() if re.match(r"\| `chroma_\w+\(", line)]
    for name in SPECS:
        (row,) = [line for line in rows if line.startswith(f"| `{name}(")]
        for argument in inspect.signature(getattr(hookspecs, name)).parameters:
            assert f"{argument}" in row, (name, argument)
    assert len(rows) == len(SPECS)


def test_every_plugin_setting_is_in_its_plugin_readme():
    for plugin, settings in declared_settings(plugin_manager()).items():
        readme = PLUGINS / plugin / "README.md"
        if not readme.exists():  # an example or a stranger's plugin documents itself
            continue
        text = readme.read_text()
        for setting in settings:
            assert setting.variable in text, (plugin, setting.variable)
