"""What the analyses say, from the shell: ``compute`` scores priorities with progress,
``label-issues``, ``duplicates``, ``drift`` and ``explain`` print what the client returns."""

from __future__ import annotations

import sys
import time

import click
import pandas as pd

from chroma_cli import output
from chroma_cli.options import json_option, where_option, with_client
from chroma_client import Client, Space

# how often compute asks how far the computation is
_POLL_SECONDS = 0.5


@click.command()
@click.argument("space")
@click.option("--only-new", is_flag=True, help="score only inputs without a score (when the "
              "training set is unchanged; otherwise everything is scored again)")  # fmt: skip
@click.option("-k", "k", type=click.IntRange(min=1), help="neighbours per input (default 10)")
@with_client
@json_option
def compute(client: Client, space: str, only_new: bool, k: int | None, as_json: bool) -> None:
    """Score SPACE's non-training inputs (priorities), showing each phase as it starts."""
    target = Space(client, space)
    params: dict = {"only_new": only_new, "background": True}
    if k is not None:
        params["k"] = k
    started = time.monotonic()
    target.compute_priorities(**params)
    shown = None
    while True:
        job = target.priority_status().get("job") or {}
        phase = job.get("phase")
        if phase != shown and phase is not None and not as_json:
            counts = ", ".join(
                f"{value:,} {name}" for name, value in job.items() if name in ("rows", "training")
            )
            elapsed = time.monotonic() - started
            click.echo(f"[{elapsed:6.1f} s] {phase}{f' ({counts})' if counts else ''}", err=True)
            shown = phase
        if job.get("state") != "running":
            break
        time.sleep(_POLL_SECONDS)
    if job.get("state") == "failed":
        raise click.ClickException(f"computing the priorities of {space!r} failed: "
                                   f"{job.get('error')}")  # fmt: skip
    summary = dict(job.get("summary") or {})
    output.record(
        {k: summary[k] for k in ("scored", "training", "stale", "only_new") if k in summary}
        if not as_json
        else summary,
        as_json,
    )


@click.command("label-issues")
@click.argument("space")
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="neighbours that vote on each label")  # fmt: skip
@click.option("-n", "n", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--all", "every", is_flag=True, help="every labelled training input, not only "
              "the likely issues")  # fmt: skip
@where_option
@with_client
@json_option
def label_issues(
    client: Client, space: str, k: int, n: int, every: bool, where, as_json: bool
) -> None:
    """SPACE's training inputs whose label is likely wrong, most likely first, with the
    label the data suggests."""
    frame = Space(client, space).label_issues(k=k, n=n, where=where, only_issues=not every)
    shown = ["id", "label", "suggested_label", "issue_score", "vote_quality", "probe_quality"]
    if not as_json:
        frame = frame[[c for c in shown if c in frame.columns]]
    output.table(frame, as_json, empty="no label issues found (--all lists every input)")


@click.command()
@click.argument("space")
@click.option("--threshold", type=float, help="distance at most which two inputs are "
              "duplicates (default: calibrated from the training inputs)")  # fmt: skip
@click.option("-n", "n", type=click.IntRange(min=1), default=50, show_default=True)
@where_option
@with_client
@json_option
def duplicates(
    client: Client, space: str, threshold: float | None, n: int, where, as_json: bool
) -> None:
    """Pairs of near-duplicate inputs in SPACE, leakage (a non-training input duplicated in
    training) first."""
    frame = Space(client, space).duplicates(threshold, where=where, n=n)
    output.table(frame, as_json, empty="no duplicates found")


@click.command()
@click.argument("space")
@click.option("--dataset", help="only this non-training dataset")
@click.option("--alpha", type=float, help="significance level (default 0.01)")
@with_client
@json_option
def drift(client: Client, space: str, dataset: str | None, alpha: float | None, as_json: bool):
    """How far each non-training dataset of SPACE moved from the training inputs."""
    params: dict = {}
    if dataset is not None:
        params["where"] = {"dataset": dataset}
    if alpha is not None:
        params["alpha"] = alpha
    frame = Space(client, space).drift(**params)
    if not as_json and len(frame):
        # nested per-class detail stays in --json
        flat = [c for c in frame.columns if not isinstance(frame[c].iloc[0], dict | list)]
        frame = frame[flat]
    output.table(frame, as_json, empty="no non-training datasets to compare")


@click.command()
@click.argument("space")
@click.argument("id_", metavar="ID")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True)
@with_client
@json_option
def explain(client: Client, space: str, id_: str, k: int, as_json: bool) -> None:
    """Why input ID of SPACE scores as it does: its priority, the share each signal has in
    it, and the K nearest training inputs with their labels."""
    why = Space(client, space).explain(id_, k=k)
    if as_json:
        output.record(
            {
                "id": why.id,
                "priority": why.priority,
                "components": why.components,
                "label_votes": why.label_votes,
                "neighbors": output.records(why.neighbors),
            },
            as_json=True,
        )
        return
    if why.priority is None:
        click.echo(f"{why.id}: not scored (a training input, or compute has not run)")
    else:
        click.echo(f"{why.id}: priority {why.priority:.4f}")
        shares = {k: v for k, v in why.components.items() if k.startswith("from_") and v}
        if shares:
            ranked = sorted(shares.items(), key=lambda kv: -kv[1])
            parts = ", ".join(f"{name[5:]} {value:.0%}" for name, value in ranked)
            click.echo(f"  from: {parts}")
        kept = {k: v for k, v in why.components.items() if not k.startswith("from_")}
        for name, value in kept.items():
            if value is not None:
                click.echo(f"  {name}: {value:.4g}")
    votes = ", ".join(f"{label} {count}" for label, count in why.label_votes.items()) or "-"
    click.echo(f"nearest {len(why.neighbors)} training inputs vote: {votes}")
    columns = ["rank", "id", "distance", "label", "dataset", "input_uri"]
    shown = why.neighbors[[c for c in columns if c in why.neighbors.columns]]
    output.table(shown if len(shown) else pd.DataFrame(columns=columns), False,
                 empty="(no training inputs)")  # fmt: skip
    sys.stdout.flush()
