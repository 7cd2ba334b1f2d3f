"""What a crash can leave in the embedded engine's files that stops it from starting, and
its repair before the engine opens.

ClickHouse writes a table's or a database's definition to a metadata file (``<table>.sql``
under ``store/``, ``<database>.sql`` under ``metadata/``) when it is made. A disk that
fills up, or a crash, at that moment can leave the file empty, and an engine that finds an
empty definition refuses to start at all. So before the embedded engine opens:

- an empty *table* definition is moved aside, under ``damaged/``: the store makes tables
  before the row that makes a space visible, so such a table belongs to a space whose
  making never finished (its name is free to make again), or to the store's own tables,
  which it makes again as it opens;
- an empty *database* definition is written again from the link ClickHouse keeps beside it
  (``metadata/<database>`` points to the database's directory, named by its UUID), so the
  database keeps every table it holds.

Each repair is said in a ``WARNING``. A server over HTTP looks after its own files.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

log = logging.getLogger("chroma.store.clickhouse")

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
DAMAGED = "damaged"


def repair_empty_definitions(root: Path) -> list[str]:
    """Repair the empty definitions under the engine directory ``root``; what was done, one
    sentence a file."""
    done: list[str] = []
    metadata = root / "metadata"
    if metadata.is_dir():
        for definition in sorted(metadata.glob("*.sql")):
            if _empty(definition):
                done.append(_rewrite_database(definition))
    for definition in sorted(root.glob("store/*/*/*.sql")):
        if _empty(definition):
            aside = root / DAMAGED / definition.relative_to(root)
            aside.parent.mkdir(parents=True, exist_ok=True)
            os.replace(definition, aside)
            done.append(
                f"the definition of table {definition.stem!r} was empty (a crash or a full "
                f"disk while it was made); moved aside to {aside}"
            )
    for sentence in done:
        log.warning("embedded ClickHouse at %s: %s", root, sentence)
    return done


def _empty(path: Path) -> bool:
    try:
        return path.is_file() and path.stat().st_size == 0
    except OSError:
        return False


def _rewrite_database(definition: Path) -> str:
    link = definition.with_suffix("")
    uuid = Path(os.readlink(link)).name if link.is_symlink() else ""
    if not UUID.match(uuid):
        aside = definition.parent.parent / DAMAGED / definition.name
        aside.parent.mkdir(parents=True, exist_ok=True)
        os.replace(definition, aside)
        return (
            f"the definition of database {definition.stem!r} was empty and names no "
            f"directory to restore it from; moved aside to {aside} (its tables are not "
            "found again: restore the data directory from a back-up)"
        )
    text = f"ATTACH DATABASE _ UUID '{uuid}'\nENGINE = Atomic\n".encode()
    temporary = definition.with_name(definition.name + ".repair")
    with open(temporary, "wb") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, definition)
    return (
        f"the definition of database {definition.stem!r} was empty; written again from "
        f"its directory (UUID {uuid}), with every table it holds"
    )
