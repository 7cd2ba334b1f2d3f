"""Retraining triggers: rules that record them as data arrives, handlers that deliver them.

Each new trigger goes through the handlers named in ``CHROMA_TRIGGER_HANDLERS``, and each
outcome is recorded on the trigger (``deliveries``), so a failed webhook is visible through
``client.triggers()`` rather than lost in a log. The ``trigger_rules`` algorithm lists,
adds and removes a space's rules; :mod:`chroma_triggers.evaluator` checks them.
"""

from __future__ import annotations

import logging

from chroma_core.algorithm import Algorithm
from chroma_core.config import Setting
from chroma_core.context import PluginContext
from chroma_core.hookspecs import hookimpl
from chroma_triggers.evaluator import Evaluator
from chroma_triggers.manifest import write_manifest
from chroma_triggers.webhook import post_trigger
from chroma_wire.errors import InvalidInput
from chroma_wire.types import Result

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
    Setting(
        "rule_seconds",
        float,
        1.0,
        "seconds between two checks of the trigger rules",
        minimum=0.01,
        maximum=3600,
    ),
    Setting(
        "rule_drift_seconds",
        float,
        300.0,
        "seconds between two drift checks of a drift rule",
        minimum=0.01,
        maximum=86_400,
    ),
]
STATE = "triggers.rules"
ACTIONS = ("list", "add", "remove")


class TriggerRules(Algorithm, name="trigger_rules"):
    """A space's trigger rules: ``action`` list (the default), add (the rule's fields) or
    remove (``name``); the table lists the rules with what each has done."""

    def run(self, context, space, params):
        evaluator = _evaluator(context)
        action = params.pop("action", "list")
        meta: dict = {}
        if action == "add":
            meta["rule"] = evaluator.add(space, params).__dict__
        elif action == "remove":
            name = params.pop("name", None)
            if params:
                raise InvalidInput(f"remove takes only name, not {', '.join(sorted(params))}")
            meta["removed"] = evaluator.remove(space, name).__dict__
        elif action == "list":
            if params:
                raise InvalidInput(f"list takes no parameters, not {', '.join(sorted(params))}")
        else:
            raise InvalidInput(f"unknown action {action!r:.40}; use one of {', '.join(ACTIONS)}")
        return Result(evaluator.listing(space), meta)


def _evaluator(context: PluginContext) -> Evaluator:
    values = context.plugin_settings
    return context.state(
        STATE,
        lambda: Evaluator(context, values["rule_seconds"], values["rule_drift_seconds"]),
    )


@hookimpl
def chroma_algorithms():
    return [TriggerRules()]


@hookimpl
def chroma_started(context):
    _evaluator(context).start()


@hookimpl
def chroma_space_deleted(context, space):
    evaluator: Evaluator | None = context.existing_state(STATE)
    if evaluator is not None:
        evaluator.forget(space.name)


@hookimpl
def chroma_shutdown(context):
    evaluator: Evaluator | None = context.existing_state(STATE)
    if evaluator is not None:
        evaluator.close()


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
