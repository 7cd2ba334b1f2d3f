"""Back-up and restore: ``export`` writes spaces to Parquet files and a manifest, ``import``
brings them back into any store (``client.export_to`` and ``client.import_from``)."""

from __future__ import annotations

from pathlib import Path

import click

from chroma_cli import output
from chroma_cli.options import json_option, with_client
from chroma_client import Client

_DIRECTORY = click.Path(file_okay=False, path_type=Path)


@click.command()
@click.argument("directory", type=_DIRECTORY)
@click.argument("spaces", nargs=-1)
@click.option(
    "--rows-per-file",
    type=click.IntRange(min=1),
    default=1_000_000,
    show_default=True,
    help="rows at most in one Parquet file",
)
@with_client
@json_option
def export(
    client: Client, directory: Path, spaces: tuple[str, ...], rows_per_file: int, as_json: bool
) -> None:
    """Back up SPACES (default: every space) into DIRECTORY, new or empty: rows with their
    embeddings and metadata, priorities, triggers with their items, and manifest.json."""
    manifest = client.export_to(directory, list(spaces) or None, rows_per_file=rows_per_file)
    if as_json:
        output.record(manifest, True)
        return
    for space in manifest["spaces"]:
        counts = ", ".join(
            f"{space.get(key, 0):,} {key.replace('_', ' ')}"
            for key in ("rows", "priorities", "triggers")
        )
        click.echo(f"{space['name']}: {counts}")
    click.echo(f"exported {len(manifest['spaces'])} space(s) to {directory}")


@click.command("import")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("spaces", nargs=-1)
@with_client(creates=True)
@json_option
def import_(client: Client, directory: Path, spaces: tuple[str, ...], as_json: bool) -> None:
    """Restore SPACES (default: all) from a back-up in DIRECTORY; each must not exist here.
    Every file is checked before anything is written, and a failure leaves nothing behind."""
    summary = client.import_from(directory, list(spaces) or None)
    if as_json:
        output.record(summary, True)
        return
    names = ", ".join(summary["spaces"]) or "(none)"
    click.echo(
        f"imported {names}: {summary['rows']:,} rows, {summary['priorities']:,} priorities, "
        f"{summary['triggers']:,} triggers"
    )
    for space, moved in summary.get("renumbered_triggers", {}).items():
        for old, new in moved.items():
            click.echo(f"{space}: trigger {old} is now trigger {new}")
