"""Deliver each new retraining trigger through the handlers named in ``CHROMA_TRIGGER_HANDLERS``.

Each outcome is recorded on the trigger (``deliveries``), so a failed webhook is visible
through ``client.triggers()`` rather than lost in a log.
"""

from __future__ import annotations

import logging

from chroma_core.config import Setting
from chroma_core.context import PluginContext
from chroma_core.hookspecs import hookimpl
from chroma_triggers.manifest import write_manifest
from chroma_triggers.webhook import post_trigger

log = logging.getLogger("chroma.triggers")

HANDLERS = ("manifest", "webhook")
SETTINGS = [
    Setting(
        "trigger_handlers",
        tuple,
        HANDLERS,
        "the handlers each new trigger goes through, comma-separated",
        choices=HANDLERS,
    ),
    Setting(
        "webhook_url",
        str,
        None,
        "where the webhook handler POSTs each trigger as JSON; none: no webhook",
        secret=True,
    ),
    Setting("webhook_timeout", float, 5.0, "seconds the webhook waits for an answer", minimum=0),
    Setting("webhook_retries", int, 3, "attempts the webhook makes at most", minimum=0),
]


@hookimpl
def chroma_settings():
    return SETTINGS


@hookimpl
def chroma_trigger_created(context, trigger, items):
    values = context.plugin_settings
    handlers = values["trigger_handlers"]
    if "manifest" in handlers:
        _deliver(
            context,
            trigger,
            "manifest",
            lambda: write_manifest(context.settings.path / "triggers", trigger, items),
        )
    if "webhook" in handlers and values["webhook_url"]:
        _deliver(
            context,
            trigger,
            "webhook",
            lambda: post_trigger(
                values["webhook_url"],
                trigger,
                items,
                timeout=values["webhook_timeout"],
                retries=values["webhook_retries"],
            ),
        )


def _deliver(context: PluginContext, trigger: dict, name: str, send) -> None:
    try:
        outcome = send()
    except Exception as exc:  # a handler failure is recorded, never lost
        log.exception("trigger %s: %s handler failed", trigger["id"], name)
        outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    context.store.update_trigger(trigger["id"], delivery=(name, outcome))
