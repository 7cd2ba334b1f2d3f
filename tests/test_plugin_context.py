"""What plugins are handed: one context for every hook and algorithm, and settings they
declare, read, typed and checked by the core."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pytest

from chroma_core.algorithm import Algorithm
from chroma_core.config import MASK, PluginSettings, Setting, Settings
from chroma_core.context import PluginContext
from chroma_core.hookspecs import hookimpl
from chroma_core.plugins import plugin_manager, plugin_settings
from chroma_core.service import Chroma
from chroma_wire.errors import InvalidInput
from chroma_wire.types import Result, SpaceInfo
from tests.conftest import Server


def rows(ids: list[str], dim: int = 4, context: str = "triage") -> pa.Table:
    data = np.random.default_rng(len(ids)).normal(size=(len(ids), dim)).astype(np.float32)
    return pa.table(
        {
            "id": ids,
            "dataset": ["d"] * len(ids),
            "context": [context] * len(ids),
            "label": [["a", "b"][i % 2] for i in range(len(ids))],
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(data.ravel()), dim),
        }
    )


class Recorder:
    """Records what each hook is handed."""

    def __init__(self):
        self.calls: list[tuple] = []

    @hookimpl
    def chroma_rows_added(self, context, space, seqs, rows):
        self.calls.append(("rows_added", context, space, len(seqs)))

    @hookimpl
    def chroma_rows_deleted(self, context, space, seqs):
        self.calls.append(("rows_deleted", context, space, len(seqs)))

    @hookimpl
    def chroma_space_deleted(self, context, space):
        self.calls.append(("space_deleted", context, space, None))

    @hookimpl
    def chroma_space_status(self, context, space):
        self.calls.append(("space_status", context, space, None))

    @hookimpl
    def chroma_metrics(self, context):
        self.calls.append(("metrics", context, None, None))

    @hookimpl
    def chroma_shutdown(self, context):
        self.calls.append(("shutdown", context, None, None))


def service(path: Path, *plugins, env: dict | None = None, **overrides) -> Chroma:
    settings = Settings.from_env(env or {}, path=path, **overrides)
    return Chroma(settings, pm=plugin_manager(plugins))


def test_every_hook_is_handed_the_context_and_a_space_info(tmp_path):
    recorder = Recorder()
    chroma = service(tmp_path, recorder)
    try:
        chroma.space("s", metric="cosine")
        chroma.add("s", rows(["a", "b", "c"]))
        chroma.delete("s", ids=["a"])
        chroma.status("s")
        chroma.hook.chroma_metrics(context=chroma.context)
        chroma.delete_space("s")
    finally:
        chroma.close()
    assert [call[0] for call in recorder.calls] == [
        "rows_added",
        "rows_deleted",
        "space_status",
        "metrics",
        "space_deleted",
        "shutdown",
    ]
    assert all(call[1] is chroma.context for call in recorder.calls)
    spaces = [call[2] for call in recorder.calls if call[2] is not None]
    assert all(isinstance(space, SpaceInfo) and space.name == "s" for space in spaces)
    # a space's first batch is announced with the dimension it gave the space
    assert spaces[0].dim == 4 and spaces[0].metric == "cosine"
    assert recorder.calls[0][3] == 3 and recorder.calls[1][3] == 1


def test_state_is_made_once_however_many_threads_ask(tmp_path):
    chroma = service(tmp_path)
    made: list[object] = []

    def factory() -> object:
        made.append(object())
        return made[-1]

    try:
        assert chroma.context.existing_state("mine") is None
        got: list[object] = []
        threads = [
            threading.Thread(target=lambda: got.append(chroma.context.state("mine", factory)))
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(made) == 1 and all(state is made[0] for state in got)
        assert chroma.context.existing_state("mine") is made[0]
    finally:
        chroma.close()


class NearestLabels(Algorithm):
    """A plugin's algorithm built on the service operations the context offers."""

    name = "nearest_labels"

    def run(self, context: PluginContext, space: SpaceInfo, params: dict) -> Result:
        seqs, vectors = context.store.vectors(space.name)
        found = context.nearest_neighbors(space, vectors[:2], 2)
        status = context.run(space, "priority_status")
        return Result(
            pa.table({"seq": found.seqs[:, 0]}),
            {"first": seqs[:2].tolist(), "unscored": status.meta["unscored"]},
        )


class NearestLabelsPlugin:
    @hookimpl
    def chroma_algorithms(self):
        return [NearestLabels()]


def test_an_algorithm_queries_neighbours_and_runs_another_through_the_context(tmp_path):
    chroma = service(tmp_path, NearestLabelsPlugin())
    try:
        chroma.space("s")
        chroma.add("s", rows([f"r{i}" for i in range(10)]))
        result = chroma.run("s", "nearest_labels")
        # each row's nearest stored row is itself
        assert result.table.column("seq").to_pylist() == result.meta["first"]
        assert result.meta["unscored"] == 10
    finally:
        chroma.close()


def test_declared_settings_are_read_from_the_environment_typed(tmp_path):
    env = {
        "CHROMA_SIMILARITY_EF": "64",
        "CHROMA_SIMILARITY_BUILD": "lazy",
        "CHROMA_PRIORITY_REFRESH_SECONDS": "0",
        "CHROMA_TRIGGER_HANDLERS": "webhook",
        "CHROMA_WEBHOOK_URL": "",
        "CHROMA_CLICKHOUSE_SECURE": "yes",
    }
    values = plugin_settings(plugin_manager(), Settings.from_env(env, path=tmp_path))
    assert values["similarity_ef"] == 64 and values["similarity_build"] == "lazy"
    assert values["priority_refresh_seconds"] == 0.0
    assert values["trigger_handlers"] == ("webhook",)
    # empty is unset where the default is none, as docker-compose passes an unset variable
    assert values["webhook_url"] is None
    assert values["clickhouse_secure"] is True and values["clickhouse_port"] == 8123
    chroma = service(tmp_path, env=env)
    try:
        assert chroma.context.plugin_settings["similarity_ef"] == 64
    finally:
        chroma.close()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CHROMA_SIMILARITY_EF", "lots"),
        ("CHROMA_SIMILARITY_EF", "0"),
        ("CHROMA_SIMILARITY_BUILD", "sometimes"),
        ("CHROMA_PRIORITY_REFRESH_SECONDS", "nan"),
        ("CHROMA_TRIGGER_HANDLERS", "manifest,email"),
        ("CHROMA_WEBHOOK_RETRIES", "-1"),
        ("CHROMA_CLICKHOUSE_PORT", "99999"),
        ("CHROMA_CLICKHOUSE_SECURE", "maybe"),
        ("CHROMA_CLICKHOUSE_DATABASE", "x; DROP DATABASE y"),
        ("CHROMA_SHARED_MEMORY", "maybe"),
    ],
)
def test_a_bad_value_stops_the_start_naming_its_variable(tmp_path, variable, value):
    with pytest.raises(InvalidInput, match=variable):
        service(tmp_path / "data", env={variable: value})
    # refused before anything is opened
    assert not (tmp_path / "data").exists()


def test_an_override_is_converted_and_checked_like_a_variable(tmp_path):
    chroma = service(tmp_path, webhook_retries="5", webhook_timeout=2)
    try:
        values = chroma.context.plugin_settings
        assert values["webhook_retries"] == 5 and values["webhook_timeout"] == 2.0
    finally:
        chroma.close()
    with pytest.raises(InvalidInput, match="CHROMA_WEBHOOK_RETRIES must be an integer"):
        service(tmp_path, webhook_retries=2.5)
    with pytest.raises(InvalidInput, match="CHROMA_SIMILARITY_EF"):
        service(tmp_path, similarity_ef=True)


def test_chroma_server_refuses_a_bad_plugin_setting(tmp_path):
    server = Path(sys.executable).with_name("chroma-server")
    done = subprocess.run(
        [str(server), "--path", str(tmp_path)],
        env={"PATH": "", "CHROMA_SIMILARITY_EF": "lots"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "CHROMA_SIMILARITY_EF='lots'" in done.stderr


class Declares:
    def __init__(self, *settings: Setting):
        self.settings = list(settings)

    @hookimpl
    def chroma_settings(self):
        return self.settings


def test_a_setting_is_declared_once_and_never_shadows_a_core_one():
    twice = Declares(Setting("similarity_ef", int, 1, "again"))
    with pytest.raises(InvalidInput, match="both declare the setting 'similarity_ef'"):
        plugin_settings(plugin_manager([twice]), Settings.from_env({}))
    core = Declares(Setting("port", int, 1, "the core's"))
    with pytest.raises(InvalidInput, match="one of the core's own"):
        plugin_settings(plugin_manager([core]), Settings.from_env({}))
    badly_named = Declares(Setting("Colour", str, "red", "a colour"))
    with pytest.raises(InvalidInput, match="lower-case"):
        plugin_settings(plugin_manager([badly_named]), Settings.from_env({}))


class StoreWatcher:
    """Sees what ``chroma_open_store`` is handed, and leaves the opening to the store."""

    seen: list[PluginSettings] = []

    @hookimpl
    def chroma_settings(self):
        return [Setting("watcher_label", str, "none", "a label")]

    @hookimpl
    def chroma_open_store(self, name, settings, plugin_settings):
        self.seen.append(plugin_settings)


def test_the_store_plugin_is_handed_the_settings_before_any_context_exists(tmp_path):
    watcher = StoreWatcher()
    chroma = service(tmp_path, watcher, env={"CHROMA_WATCHER_LABEL": "blue"})
    try:
        (seen,) = watcher.seen
        assert seen["watcher_label"] == "blue" and seen is chroma.context.plugin_settings
    finally:
        chroma.close()


def test_plugins_route_lists_each_plugin_s_settings_with_secrets_masked(tmp_path):
    secret = "https://hooks.example/T0KEN"
    server = Server(
        tmp_path / "data",
        env={"CHROMA_WEBHOOK_URL": secret, "CHROMA_SIMILARITY_EF": "96"},
    )
    try:
        listed = httpx.get(f"{server.url}/-/plugins").json()["plugins"]
    finally:
        server.stop()
    plugins = {plugin["name"]: plugin for plugin in listed}
    assert secret not in str(listed)
    triggers = {s["name"]: s for s in plugins["triggers"]["settings"]}
    assert triggers["webhook_url"]["value"] == MASK and triggers["webhook_url"]["secret"]
    assert triggers["trigger_handlers"]["value"] == ["manifest", "webhook"]
    assert triggers["webhook_retries"] == {
        "name": "webhook_retries",
        "variable": "CHROMA_WEBHOOK_RETRIES",
        "type": "int",
        "default": 3,
        "value": 3,
        "doc": "attempts the webhook makes at most",
        "secret": False,
    }
    similarity = {s["name"]: s for s in plugins["algo_similarity"]["settings"]}
    assert similarity["similarity_ef"]["value"] == 96
    assert plugins["store_sqlite"]["settings"] == []
