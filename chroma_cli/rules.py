"""Trigger rules: ``rules list``, ``rules add`` and ``rules remove``."""

from __future__ import annotations

import re

import click

from chroma_cli import output
from chroma_cli.options import json_option, strategy_option, where_option, with_client
from chroma_client import Client, Space

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
SHOWN = ["name", "when", "n", "min_priority", "dataset", "every", "strategy", "fired",
         "last_trigger", "last_fired_at", "last_error"]  # fmt: skip


class Duration(click.ParamType):
    """Seconds, or a number with a unit: 90s, 15m, 12h, 1d, 1w."""

    name = "DURATION"

    def convert(self, value, param, ctx):
        if isinstance(value, int | float):
            return float(value)
        found = DURATION.match(str(value))
        if found is None:
            self.fail(f"{value!r} is not a duration such as 3600, 90s, 15m, 12h, 1d or 1w")
        return float(found.group(1)) * UNITS[found.group(2) or "s"]


@click.group()
def rules() -> None:
    """Trigger rules: a space records retraining triggers by itself as data arrives."""


@rules.command("list")
@click.argument("space")
@with_client
@json_option
def list_(client: Client, space: str, as_json: bool) -> None:
    """SPACE's trigger rules, with how often each has fired."""
    frame = Space(client, space).trigger_rules()
    output.table(frame if as_json else frame[SHOWN], as_json, empty="no trigger rules")


@rules.command()
@click.argument("space")
@click.argument("name")
@click.option(
    "--when",
    type=click.Choice(["priority", "drift", "schedule"]),
    required=True,
    help="priority: once N inputs reach --min-priority; drift: when --dataset drifts; "
    "schedule: every --every",
)
@click.option("-n", "n", type=click.IntRange(min=1), required=True, help="inputs a trigger takes")
@click.option("--min-priority", type=float, help="the priority an input must reach")
@click.option("--dataset", help="the dataset a drift rule watches")
@click.option(
    "--every",
    type=Duration(),
    help="a schedule's period; for the others the least time between two triggers "
    "(90s, 15m, 12h, 1d; drift default 1d)",
)
@strategy_option
@click.option("--note", help="a note stored with each trigger")
@where_option
@with_client
@json_option
def add(
    client: Client,
    space: str,
    name: str,
    when: str,
    n: int,
    min_priority: float | None,
    dataset: str | None,
    every: float | None,
    strategy: str,
    note: str | None,
    where,
    as_json: bool,
) -> None:
    """Keep rule NAME on SPACE: it records a trigger of -n inputs by itself, never taking
    an input an earlier trigger of the rule holds; the server's handlers deliver it."""
    if when == "priority" and min_priority is None:
        raise click.UsageError("--when priority needs --min-priority")
    if when == "drift" and not dataset:
        raise click.UsageError("--when drift needs --dataset")
    if when != "drift" and dataset is not None:
        raise click.UsageError(f"--dataset is for --when drift; filter a {when} rule with --where")
    if when == "schedule" and every is None:
        raise click.UsageError("--when schedule needs --every, e.g. --every 1d")
    made = Space(client, space).add_trigger_rule(
        name,
        when,
        n,
        min_priority=min_priority,
        where=where,
        dataset=dataset,
        strategy=strategy,
        every=every,
        note=note,
    )
    output.record(made, as_json)


@rules.command()
@click.argument("space")
@click.argument("name")
@with_client
@json_option
def remove(client: Client, space: str, name: str, as_json: bool) -> None:
    """Drop rule NAME from SPACE; the triggers it recorded stay."""
    output.record(Space(client, space).remove_trigger_rule(name), as_json)
