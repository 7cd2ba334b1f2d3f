"""``watch``: follow a space's new scored inputs and triggers as they come."""

from __future__ import annotations

import dataclasses
import json

import click

from chroma_cli.options import where_option, with_client
from chroma_client import Client, Space, Watched


@click.command()
@click.argument("space")
@click.option("--min-priority", type=float, help="only inputs scoring at least this")
@click.option(
    "--after",
    metavar="POSITION",
    help="resume after this position (printed with each event); default: from now",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    help="stop after this many seconds (default: follow until interrupted)",
)
@where_option
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line, for scripts")
@with_client
def watch(
    client: Client,
    space: str,
    min_priority: float | None,
    after: str | None,
    timeout: float | None,
    where,
    as_json: bool,
) -> None:
    """Print SPACE's new inputs as they are scored, and its new triggers, until interrupted.
    Each line ends with its position: --after POSITION resumes after it."""
    following = Space(client, space).watch(
        min_priority=min_priority, where=where, after=after, timeout=timeout
    )
    try:
        for event in following:
            click.echo(_json(event) if as_json else _line(event))
    except KeyboardInterrupt:
        if following.position:
            click.echo(f"chroma: stopped; resume with --after {following.position}", err=True)
        raise


def _json(event: Watched) -> str:
    body: dict = {"kind": event.kind, "position": event.position}
    if event.input is not None:
        body["input"] = event.input
    if event.trigger is not None:
        body["trigger"] = dataclasses.asdict(event.trigger)
    return json.dumps(body, default=str)


def _line(event: Watched) -> str:
    if event.trigger is not None:
        t = event.trigger
        rule = (t.selection.get("rule") or {}).get("name")
        by = f" rule={rule}" if rule else ""
        return f"trigger  #{t.id}  inputs={t.count}{by}  position={event.position}"
    row = event.input or {}
    shown = [f"input  {row['id']}  priority={row['priority']:.3f}"]
    shown += [f"{k}={row[k]}" for k in ("dataset", "inference", "input_uri") if row.get(k)]
    return "  ".join([*shown, f"position={event.position}"])
