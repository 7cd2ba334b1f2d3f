"""Deliver each new retraining trigger through the handlers named in ``CHROMA_TRIGGER_HANDLERS``.

Each outcome is recorded on the trigger (``deliveries``), so a failed webhook is visible
through ``client.triggers()`` rather than lost in a log.
"""

from __future__ import annotations

import logging

from chroma_core.hookspecs import hookimpl
from chroma_triggers.manifest import write_manifest
from chroma_triggers.webhook import post_trigger

log = logging.getLogger("chroma.triggers")


@hookimpl
def chroma_trigger_created(chroma, trigger, items):
    settings = chroma.settings
    handlers = settings.trigger_handlers
    if "manifest" in handlers:
        _deliver(
            chroma,
            trigger,
            "manifest",
            lambda: write_manifest(settings.path / "triggers", trigger, items),
        )
    if "webhook" in handlers and settings.webhook_url:
        _deliver(
            chroma,
            trigger,
            "webhook",
            lambda: post_trigger(
                settings.webhook_url,
                trigger,
                items,
                timeout=settings.webhook_timeout,
                retries=settings.webhook_retries,
            ),
        )


def _deliver(chroma, trigger, name, send) -> None:
    try:
        outcome = send()
    except Exception as exc:  # a handler failure is recorded, never lost
        log.exception("trigger %s: %s handler failed", trigger["id"], name)
        outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    chroma.store.update_trigger(trigger["id"], delivery=(name, outcome))
