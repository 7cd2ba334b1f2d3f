"""The plugin manager: every plugin, built-in or not, comes from the ``chroma`` entry points."""

from __future__ import annotations

import difflib
import inspect
import os
import sys
from collections.abc import Iterable
from typing import cast

import pluggy

from chroma_core import hookspecs
from chroma_core.config import PluginSettings, Setting, Settings
from chroma_core.store import Store
from chroma_wire.errors import NotFound, ServerError

ENTRY_POINT_GROUP = "chroma"
#: the name of every hook
SPECS = tuple(name for name in vars(hookspecs) if name.startswith("chroma_"))


class InvalidPlugin(ServerError):
    """An installed plugin does not fit the hook specs: a misspelled hook, or a hook taking
    arguments the spec does not pass. It stops the start, naming the plugin and the hook."""


def plugin_manager(extra_plugins=()) -> pluggy.PluginManager:
    """A manager with the hook specs, every installed plugin and ``extra_plugins``.

    Every ``chroma_*`` implementation must match a spec (``check_pending``), so a misspelled
    hook stops the start instead of never being called. ``CHROMA_TRACE_HOOKS=1`` writes
    every hook call and result to stderr.
    """
    pm = pluggy.PluginManager("chroma")
    pm.add_hookspecs(hookspecs)
    try:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        for plugin in extra_plugins:
            pm.register(plugin)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise InvalidPlugin(_explain(pm, exc)) from exc
    if os.environ.get("CHROMA_TRACE_HOOKS"):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    return pm


def _explain(pm: pluggy.PluginManager, exc: pluggy.PluginValidationError) -> str:
    """The plugin and hook at fault: a hook no spec names (with the likely spelling), or
    one taking arguments its spec does not pass."""
    specs = {name: _arguments(fn) for name, fn in vars(hookspecs).items() if name in SPECS}
    unknown = [
        (impl.plugin, name)
        for name, caller in vars(pm.hook).items()
        if not name.startswith("_") and not caller.has_spec()
        for impl in caller.get_hookimpls()
        if not impl.optionalhook
    ]
    problems = []
    for plugin, hook in unknown:
        close = difflib.get_close_matches(hook, specs, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        problems.append(
            f"plugin {_label(pm, plugin)} implements {hook!r}, which is no Chroma hook{hint}"
        )
    for hook, passed in specs.items():
        function = getattr(exc.plugin, hook, None)
        if unknown or not callable(function):
            continue
        extra = [name for name in _arguments(function) if name not in passed]
        if extra:
            problems.append(
                f"plugin {_label(pm, exc.plugin)}: its {hook} takes {', '.join(extra)}, which "
                f"the hook does not pass (it passes {', '.join(passed) or 'nothing'})"
            )
    return "; ".join(problems) or f"a plugin does not fit Chroma's hook specs: {exc}"


def _arguments(function) -> list[str]:
    """The arguments pluggy passes to ``function``: those without a default, but self."""
    return [
        name
        for name, p in inspect.signature(function).parameters.items()
        if p.default is inspect.Parameter.empty and name != "self"
    ]


def _label(pm: pluggy.PluginManager, plugin) -> str:
    """A plugin as its author knows it: its entry-point name and module, or its class."""
    module = getattr(plugin, "__name__", None)
    if module is None:
        return f"{type(plugin).__module__}.{type(plugin).__qualname__}"
    name = pm.get_name(plugin)
    return f"{name!r} ({module})" if name and name != module else repr(module)


def declared_settings(pm: pluggy.PluginManager) -> dict[str, list[Setting]]:
    """The settings each plugin declares through ``chroma_settings``, by plugin name."""
    declared: dict[str, list[Setting]] = {}
    for impl in pm.hook.chroma_settings.get_hookimpls():
        entries = cast("Iterable[Setting] | None", impl.function())
        declared[impl.plugin_name] = list(entries or ())
    return declared


def plugin_settings(pm: pluggy.PluginManager, settings: Settings) -> PluginSettings:
    """The typed values of every plugin's declared settings, read from ``settings``;
    ``InvalidInput`` names the variable of a bad value."""
    return PluginSettings.read(declared_settings(pm), settings)


def store_names(pm: pluggy.PluginManager) -> list[str]:
    """The stores the installed plugins are named after (``store_<name>``)."""
    return sorted(
        name.removeprefix("store_")
        for name, _ in pm.list_name_plugin()
        if name.startswith("store_")
    )


def open_store(
    settings: Settings,
    pm: pluggy.PluginManager | None = None,
    values: PluginSettings | None = None,
) -> Store:
    """The store ``settings.store`` opened by the plugin that serves it, as a service opens
    it; ``NotFound`` when no installed plugin does."""
    pm = pm or plugin_manager()
    values = plugin_settings(pm, settings) if values is None else values
    store = pm.hook.chroma_open_store(
        name=settings.store, settings=settings, plugin_settings=values
    )
    if store is None:
        raise NotFound(
            f"no installed plugin provides the store {settings.store!r}; "
            f"installed stores answer to: {', '.join(store_names(pm)) or 'none'}"
        )
    return store


def describe_plugins(pm: pluggy.PluginManager, values: PluginSettings | None = None) -> list[dict]:
    """One entry per loaded plugin: its name, distribution, version, implemented hooks and
    declared settings (secret values masked)."""
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    out = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        if plugin is None:
            continue
        dist = dists.get(id(plugin))
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        out.append(
            {
                "name": name,
                "package": dist.project_name if dist else None,
                "version": dist.version if dist else None,
                "hooks": hooks,
                "settings": values.describe(name) if values is not None else [],
            }
        )
    return out
