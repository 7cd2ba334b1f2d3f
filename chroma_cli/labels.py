"""Labels to and from labelling tools: ``labels import`` and ``labels export``."""

from __future__ import annotations

from pathlib import Path

import click

from chroma_cli import output
from chroma_cli.options import json_option, with_client
from chroma_client import Client, Space
from chroma_client.labels import FORMATS


@click.group()
def labels() -> None:
    """Labels from a labelling tool back onto the inputs, and a trigger's inputs out to one."""


@labels.command("import")
@click.argument("space")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "kind", type=click.Choice(FORMATS),
              help="the file's format (default: told from its name: .csv, .parquet, "
              ".json for Label Studio, .xml for CVAT)")  # fmt: skip
@click.option("--into-training", is_flag=True,
              help="also move the labelled inputs into training, in the same step")  # fmt: skip
@click.option("--id-column", default="id", show_default=True, help="CSV/Parquet: the ids")
@click.option("--label-column", default="label", show_default=True,
              help="CSV/Parquet: the labels")  # fmt: skip
@with_client
@json_option
def import_labels(
    client: Client,
    space: str,
    file: Path,
    kind: str | None,
    into_training: bool,
    id_column: str,
    label_column: str,
    as_json: bool,
) -> None:
    """Set the labels FILE gives on SPACE's inputs: a CSV or Parquet table of id and label,
    a Label Studio JSON export, or a CVAT for images 1.1 XML export. Every input must be
    stored, or nothing changes."""
    done = Space(client, space).import_labels(
        file, format=kind, into_training=into_training, id_column=id_column,
        label_column=label_column,
    )  # fmt: skip
    output.record({"space": space, **done}, as_json)


@labels.command("export")
@click.argument("trigger_id", metavar="TRIGGER_ID", type=int)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data-key", default="image", show_default=True,
              help="the task data field that holds each input's URI")  # fmt: skip
@with_client
@json_option
def export_labels(
    client: Client, trigger_id: int, file: Path, data_key: str, as_json: bool
) -> None:
    """Write the inputs of trigger TRIGGER_ID to FILE as a Label Studio import file, the
    model's inference as each task's prediction."""
    count = client.export_label_studio(trigger_id, file, data_key=data_key)
    output.record({"trigger": trigger_id, "tasks": count, "file": str(file)}, as_json)
