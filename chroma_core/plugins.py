"""The plugin manager: every plugin, built-in or not, comes from the ``chroma`` entry points."""

from __future__ import annotations

import os
import sys

import pluggy

from chroma_core import hookspecs

ENTRY_POINT_GROUP = "chroma"


def plugin_manager(extra_plugins=()) -> pluggy.PluginManager:
    """A manager with the hook specs, every installed plugin and ``extra_plugins``.

    ``CHROMA_TRACE_HOOKS=1`` writes every hook call and result to stderr.
    """
    pm = pluggy.PluginManager("chroma")
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in extra_plugins:
        pm.register(plugin)
    if os.environ.get("CHROMA_TRACE_HOOKS"):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    return pm


def describe_plugins(pm: pluggy.PluginManager) -> list[dict]:
    """One entry per loaded plugin: its name, distribution, version and implemented hooks."""
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
            }
        )
    return out
