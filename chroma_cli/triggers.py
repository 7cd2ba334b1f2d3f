"""Retraining triggers: ``trigger`` records one, ``triggers`` lists them."""

from __future__ import annotations

import dataclasses

import click
import pandas as pd

from chroma_cli import output
from chroma_cli.options import json_option, strategy_option, where_option, with_client
from chroma_client import Client, Space


@click.command()
@click.argument("space")
@click.option("-n", "n", type=click.IntRange(min=1), help="how many inputs (the budget)")
@click.option("--min-priority", type=float, help="every input scoring at least this")
@strategy_option
@click.option("--note", help="a note stored with the trigger")
@where_option
@with_client
@json_option
def trigger(
    client: Client,
    space: str,
    n: int | None,
    min_priority: float | None,
    strategy: str,
    note: str | None,
    where,
    as_json: bool,
) -> None:
    """Record a retraining trigger on SPACE's highest-priority inputs; the server's
    handlers deliver it (manifest file, webhook)."""
    if n is None and min_priority is None:
        raise click.UsageError("say how many inputs: -n N and/or --min-priority P")
    made = Space(client, space).trigger_retraining(
        n=n, min_priority=min_priority, where=where, note=note, strategy=strategy
    )
    output.record(dataclasses.asdict(made), as_json)


@click.command()
@click.argument("space", required=False)
@click.option(
    "--status",
    type=click.Choice(["pending", "acknowledged", "done", "failed"]),
    help="only triggers in this state",
)
@with_client
@json_option
def triggers(client: Client, space: str | None, status: str | None, as_json: bool) -> None:
    """List retraining triggers, newest first (of SPACE, or of every space)."""
    found = client.triggers(space=space, status=status)
    if as_json:
        output.table(found.drop(columns=["strategy", "trigger"]), as_json=True)
        return
    output.table(_frame(found), as_json=False, empty="no triggers")


def _frame(found: pd.DataFrame) -> pd.DataFrame:
    shown = found.assign(
        delivered=[", ".join(sorted(d)) or "-" for d in found["deliveries"]],
        labelled=[f"{int(done)}/{count}" for done, count in zip(found["labelled"],
                                                              found["count"], strict=True)],
    )  # fmt: skip
    columns = ["id", "space", "status", "count", "labelled", "strategy", "delivered",
               "created_at", "note"]  # fmt: skip
    return shown[columns]


@click.command("trigger-status")
@click.argument("trigger_id", metavar="ID", type=int)
@click.argument("status", type=click.Choice(["pending", "acknowledged", "done", "failed"]))
@with_client
@json_option
def trigger_status(client: Client, trigger_id: int, status: str, as_json: bool) -> None:
    """Move trigger ID to STATUS (pending, acknowledged, done or failed)."""
    moved = client.set_trigger_status(trigger_id, status)
    output.record(dataclasses.asdict(moved), as_json)


@click.command("trigger-items")
@click.argument("trigger_id", metavar="ID", type=int)
@with_client
@json_option
def trigger_items(client: Client, trigger_id: int, as_json: bool) -> None:
    """The inputs trigger ID selected, highest priority first."""
    frame = client.trigger_items(trigger_id)
    output.table(frame, as_json, empty="the trigger holds no inputs")
