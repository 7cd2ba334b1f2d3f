"""The ``chroma`` console script: one group of subcommands and how their errors read.

A failure prints one line, ``chroma: error: ...``, and exits 2 for a usage error (an
unknown option, a missing argument, bad JSON in ``--where``) or 1 for anything else (a
typed client error, a file that cannot be loaded, a server that cannot be reached).
A new command is a ``click.Command`` added to ``COMMANDS``.
"""

from __future__ import annotations

import os
import sys

import click

from chroma_cli.analyses import compute, drift, duplicates, explain, label_issues
from chroma_cli.backup import export, import_
from chroma_cli.labels import labels
from chroma_cli.load import LoadError, LoadInterrupted, load
from chroma_cli.rules import rules
from chroma_cli.sources import SourceError
from chroma_cli.spaces import delete, neighbors, priorities, spaces, stats
from chroma_cli.triggers import trigger, trigger_items, trigger_status, triggers
from chroma_cli.watch import watch
from chroma_client import __version__
from chroma_client.errors import ChromaError


@click.command(
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
def run(arguments: tuple[str, ...]) -> None:
    """Serve Chroma over HTTP: the options of chroma-server (chroma run --help)."""
    # the server's own argument handling, so both commands take the same flags
    from chroma_core import server

    server.main(list(arguments), prog="chroma run")


COMMANDS = [
    run, load, spaces, stats, compute, priorities, explain, neighbors, label_issues, duplicates,
    drift, trigger, triggers, trigger_status, trigger_items, labels, rules, watch, delete,
    export, import_,
]  # fmt: skip


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, invoke_without_command=True)
@click.version_option(__version__, prog_name="chroma")
@click.pass_context
def cli(context: click.Context) -> None:
    """Chroma from the shell: load embeddings, look at spaces, neighbours and priorities,
    record retraining triggers and keep rules that record them, run the server.

    Every command but run works on a server (--url or CHROMA_URL) or, without one, on the
    data directory in this process (--path, CHROMA_PATH, default ./chroma_data)."""
    if context.invoked_subcommand is None:
        click.echo(context.get_help())


for _command in COMMANDS:
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    try:
        code = cli.main(args=argv, prog_name="chroma", standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _fail(f"{exc.format_message()}{hint}", 2)
    except LoadInterrupted as exc:
        _fail(str(exc), 130)
    except (click.Abort, KeyboardInterrupt):
        _fail("interrupted", 130)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except ChromaError as exc:
        _fail(exc.detail, 1)
    except (LoadError, SourceError) as exc:
        _fail(str(exc), 1)
    except BrokenPipeError:
        # the reader went away (| head): stop quietly, as other commands do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except OSError as exc:
        _fail(str(exc), 1)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, status: int) -> None:
    click.echo(f"chroma: error: {message}", err=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
