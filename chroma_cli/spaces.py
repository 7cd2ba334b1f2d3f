"""Looking at spaces: ``spaces``, ``stats``, ``priorities``, ``neighbors``; ``delete``."""

from __future__ import annotations

import sys
from collections import Counter

import click

from chroma_cli import output
from chroma_cli.options import json_option, where_option, with_client
from chroma_client import Client, Space
from chroma_client.errors import NotFound

#: catalogue rows read per request by ``stats``
STATS_PAGE = 200_000
#: values of each field ``stats`` shows as text (``--json`` has them all)
STATS_SHOWN = 20
COUNTED = ("dataset", "context", "label", "inference")


@click.command()
@with_client
@json_option
def spaces(client: Client, as_json: bool) -> None:
    """List the spaces: name, dimension, metric, rows."""
    frame = client.spaces()
    if not as_json:
        frame = frame.drop(columns=["model"])
    output.table(frame, as_json, empty="no spaces")


@click.command()
@click.argument("space")
@with_client
@json_option
def stats(client: Client, space: str, as_json: bool) -> None:
    """Rows by dataset, context, label and inference; dimension, metric, index and
    priority state of SPACE.

    Reads the catalogue of every row (no embeddings), a page at a time."""
    target = Space(client, space)
    status = target.status()
    info = status.pop("space")
    counts: dict[str, Counter[str]] = {field: Counter() for field in COUNTED}
    offset = 0
    while True:
        page = target.get(limit=STATS_PAGE, offset=offset)
        for field in COUNTED:
            counts[field].update(page[field].fillna("(none)").tolist())
        offset += len(page)
        if len(page) < STATS_PAGE:
            break
    try:
        priorities = target.priority_status()
    except NotFound:  # no priority plugin installed
        priorities = None
    summary = {
        "space": info["name"],
        "rows": offset,
        "dim": info["dim"],
        "metric": info["metric"],
        "model": info.get("model") or {},
        "created_at": info.get("created_at"),
        **status,
    }
    if priorities is not None:
        summary["priorities"] = {
            key: priorities.get(key) for key in ("scored", "unscored", "stale") if key in priorities
        }
    by = {field: dict(counts[field].most_common()) for field in COUNTED}
    if as_json:
        output.record({**summary, "counts": by}, as_json=True)
        return
    output.record(summary, as_json=False)
    for field in COUNTED:
        ranked = counts[field].most_common()
        click.echo(f"\nby {field}:" if ranked else f"\nby {field}: -")
        for value, count in ranked[:STATS_SHOWN]:
            click.echo(f"  {count:>10}  {value}")
        if len(ranked) > STATS_SHOWN:
            rest = sum(count for _, count in ranked[STATS_SHOWN:])
            click.echo(f"  {rest:>10}  ({len(ranked) - STATS_SHOWN} more values)")


@click.command()
@click.argument("space")
@click.option("-n", "n", type=click.IntRange(min=0), default=20, show_default=True)
@click.option("--min-priority", type=float, help="only inputs scoring at least this")
@click.option(
    "--compute",
    is_flag=True,
    help="score the inputs first (compute_priorities, only the unscored when the training "
    "set is unchanged)",
)
@where_option
@with_client
@json_option
def priorities(
    client: Client,
    space: str,
    n: int,
    min_priority: float | None,
    compute: bool,
    where,
    as_json: bool,
) -> None:
    """The N inputs of SPACE to relabel first, highest priority first."""
    target = Space(client, space)
    if compute:
        target.compute_priorities(only_new=True)
    frame = target.priorities(n=n, where=where, min_priority=min_priority)
    if not as_json:
        # a component no row has (confidence without model outputs) only takes room
        shown = [c for c in PRIORITY_COLUMNS if c in frame.columns and frame[c].notna().any()]
        frame = frame[shown] if len(frame) else frame[[c for c in PRIORITY_COLUMNS if c in frame]]
    empty = _none_found(target, where, min_priority) if frame.empty and n else "(none)"
    output.table(frame, as_json, empty=empty)


def _none_found(target: Space, where, min_priority: float | None) -> str:
    """Why no input is listed: none is scored, none matches --where, or none reaches
    --min-priority (and the highest there is)."""
    if target.priority_status()["scored"] == 0:
        return "no scored inputs (--compute scores them)"
    matching = target.priorities(n=1, where=where)
    if matching.empty:
        return "no scored input matches --where"
    highest = float(matching["priority"].iloc[0])
    floor = "" if min_priority is None else f" {min_priority:g}"
    return f"no scored input reaches --min-priority{floor} (the highest is {highest:.3f})"


#: the columns shown: the priority and the components that make it (docs/priority.md,
#: "Combination"), then the catalogue
PRIORITY_COLUMNS = (
    "id",
    "priority",
    "support",
    "probe_support",
    "confidence",
    "novelty",
    "inference",
    "label",
    "dataset",
    "input_uri",
)


@click.command()
@click.argument("space")
@click.option("--id", "id_", required=True, metavar="ID", help="the stored input to start from")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True)
@where_option
@with_client
@json_option
def neighbors(client: Client, space: str, id_: str, k: int, where, as_json: bool) -> None:
    """The K stored inputs of SPACE nearest to input ID (itself left out)."""
    frame = Space(client, space).nearest_neighbors(ids=[id_], k=k, where=where)
    output.table(frame.drop(columns=["query"]), as_json, empty="no neighbours")


@click.command()
@click.argument("space")
@click.option("--ids", help="comma-separated ids of the inputs to delete")
@where_option
@click.option("--yes", is_flag=True, help="do not ask before deleting")
@with_client
@json_option
def delete(client: Client, space: str, ids: str | None, where, yes: bool, as_json: bool) -> None:
    """Delete SPACE whole, or only its inputs given by --ids and/or --where. Asks first
    unless --yes (which a script without a terminal must give)."""
    target = Space(client, space)
    whole = ids is None and where is None
    count = target.count() if whole else None
    if whole:
        what = f"space {space!r} with its {count:,} inputs, priorities and triggers"
    else:
        what = f"the inputs of space {space!r} given by --ids/--where"
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError(f"deleting {what} wants --yes when not run on a terminal")
        click.confirm(f"Delete {what}?", abort=True, err=True)
    if whole:
        client.delete_space(space)
        output.record({"deleted_space": space, "inputs": count}, as_json)
        return
    listed = [i.strip() for i in ids.split(",") if i.strip()] if ids is not None else None
    if listed is not None and not listed:
        raise click.UsageError("--ids names no id")
    gone = target.delete(ids=listed, where=where)
    output.record({"space": space, "deleted": gone}, as_json)
