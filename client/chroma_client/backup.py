"""Back-up and restore: model spaces to a directory of Parquet files with a manifest, and back.

A back-up directory holds ``manifest.json`` and one folder per space::

    manifest.json
    0000-<space>/rows-00000.parquet     every stored column of the rows and their seq, seq
    0000-<space>/rows-00001.parquet     order, at most ``rows_per_file`` rows a file
    0000-<space>/priorities-00000.parquet   the stored scores, verbatim, id order
    0000-<space>/triggers.parquet       one row per trigger, oldest first
    0000-<space>/trigger_items.parquet  their items, trigger after trigger, each in its order

Both directions stream a page at a time through the client's transport (in process, or the
Arrow protocol over HTTP), so a space of millions of rows is never held at once. Files are
written with zstd (vectors split by byte first) and Parquet page checksums; the manifest
records each file's row count, size and SHA-256, and is written last, so a directory
without one is not a back-up.

An import checks the manifest and every file (format version, checksums, Parquet footers,
row counts, dimensions, the grouping of trigger items) before it writes anything, refuses
a space that already exists, and removes every space it created when anything fails later.
Rows keep their ids and their seqs, so priorities stay current (their ``training_version``
names the same training rows) and triggers point at the same rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from chroma_client.errors import (
    ChromaError,
    Conflict,
    InvalidBackup,
    InvalidInput,
    NotFound,
    ServerError,
)
from chroma_wire import __version__
from chroma_wire.limits import MAX_PAGE_ROWS
from chroma_wire.rows import rows_schema
from chroma_wire.types import METRICS

#: how back-up and restore reach a Chroma: ``call(operation, params, table=None)`` answers
#: ``(reply dict, Arrow table or None)``, as the client's transports do
Call = Callable[..., tuple[dict, pa.Table | None]]

FORMAT = "chroma-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ROWS_PER_FILE = 1_000_000
#: the vectors one page of rows carries at most, whatever ``batch_rows`` says
PAGE_BYTES = 32 << 20
KINDS = ("rows", "priorities", "triggers", "trigger_items")
_WRITE_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "write_page_checksum": True,
    # a dictionary pays only where values repeat; floats compress better split by byte
    "use_dictionary": ["dataset", "context", "inference", "label", "status"],
    "use_byte_stream_split": ["embedding.list.element", "output.list.element"],
}

PRIORITIES_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("priority", pa.float64(), nullable=False),
        pa.field("components", pa.string()),
        pa.field("computed_at", pa.string()),
    ]
)
TRIGGERS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("note", pa.string()),
        pa.field("selection", pa.string(), nullable=False),  # JSON object
        pa.field("count", pa.int64(), nullable=False),
        pa.field("created_at", pa.string()),
        pa.field("updated_at", pa.string()),
        pa.field("deliveries", pa.string(), nullable=False),  # JSON object
    ]
)
ITEMS_SCHEMA = pa.schema(
    [
        pa.field("trigger_id", pa.int64(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("input_uri", pa.string()),
        pa.field("dataset", pa.string()),
        pa.field("label", pa.string()),
        pa.field("inference", pa.string()),
        pa.field("priority", pa.float64()),
    ]
)


def file_schema(kind: str, dim: int | None = None) -> pa.Schema:
    """The Arrow schema of a back-up file of ``kind`` (rows need the space's dimension)."""
    if kind == "rows":
        return pa.schema([pa.field("seq", pa.int64(), nullable=False), *rows_schema(dim or 1)])
    return {"priorities": PRIORITIES_SCHEMA, "triggers": TRIGGERS_SCHEMA}.get(kind, ITEMS_SCHEMA)


# --- export -----------------------------------------------------------------------
def export_to(
    call: Call,
    path: str | os.PathLike,
    spaces: str | list[str] | None = None,
    *,
    batch_rows: int = MAX_PAGE_ROWS,
    progress: bool | None = None,
    rows_per_file: int = ROWS_PER_FILE,
) -> dict:
    """Write ``spaces`` (default: all) to the new or empty directory ``path``; returns the
    manifest. On failure the files written so far are removed."""
    if not isinstance(rows_per_file, int) or isinstance(rows_per_file, bool) or rows_per_file < 1:
        raise InvalidInput("rows_per_file must be a positive integer")
    root = Path(path)
    listed = {s["name"]: s for s in call("spaces")[0]["spaces"]}
    names = sorted(listed) if spaces is None else _names(spaces)
    missing = [name for name in names if name not in listed]
    if missing:
        raise NotFound(f"no space named {', '.join(map(repr, missing))} to export")
    created = _empty_directory(root)
    version = call("version")[0]
    try:
        with _bar(progress, sum(listed[n]["count"] for n in names), "export") as bar:
            entries = [
                _export_space(
                    call, batch_rows, root, f"{i:04d}-{name}", listed[name], bar, rows_per_file
                )
                for i, name in enumerate(names)
            ]
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "chroma_version": version.get("version"),
            "store": version.get("store"),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "spaces": entries,
        }
        _write_manifest(root, manifest)
    except BaseException:
        _remove(root, created)
        raise
    return manifest


def _export_space(
    call: Call, batch_rows: int, root: Path, folder: str, info: dict, bar, rows_per_file: int
) -> dict:
    name = info["name"]
    (root / folder).mkdir()
    rows = _Parts(root, f"{folder}/rows", "rows", rows_per_file)
    bar.set_postfix_str(name)
    dim, snapshot = info.get("dim"), None
    after = 0
    page_rows = _page_rows(batch_rows, dim)
    while True:
        reply, page = _with_table(
            call, "export_rows", {"space": name, "after_seq": after, "limit": page_rows}
        )
        if snapshot is None:
            # rows stored after the export began are left out, and so are their scores
            snapshot = int(reply["max_seq"])
        seqs = page.column("seq").to_numpy()
        keep = int(np.searchsorted(seqs, snapshot, side="right"))
        if keep:
            dim = page.schema.field("embedding").type.list_size
            rows.write(_conform(page.slice(0, keep), file_schema("rows", dim)))
            bar.update(keep)
            after = int(seqs[keep - 1])
        if keep < len(seqs) or not len(seqs) or after >= snapshot:
            break
    bar.set_postfix_str(f"{name}: priorities")
    scores = _Parts(root, f"{folder}/priorities", "priorities", rows_per_file)
    after_id = None
    while True:
        _, page = _with_table(
            call,
            "export_priorities",
            {"space": name, "after_id": after_id, "limit": _page_rows(batch_rows, None)},
        )
        if page.num_rows == 0:
            break
        after_id = page.column("id")[-1].as_py()
        current = page.filter(pc.less_equal(page.column("seq"), snapshot or 0))
        scores.write(_conform(current, PRIORITIES_SCHEMA))
    bar.set_postfix_str(f"{name}: triggers")
    triggers = sorted(call("triggers", {"space": name})[0]["triggers"], key=_id)
    listing = _Parts(root, f"{folder}/triggers", "triggers", None)
    items = _Parts(root, f"{folder}/trigger_items", "trigger_items", None)
    if triggers:
        listing.write(_triggers_table(triggers))
    for trigger in triggers:
        _, table = _with_table(call, "trigger_items", {"trigger_id": trigger["id"]})
        n = table.num_rows
        table = table.add_column(0, "trigger_id", pa.array(np.full(n, trigger["id"], np.int64)))
        items.write(_conform(table, ITEMS_SCHEMA))
    files = [f for part in (rows, scores, listing, items) for f in part.close()]
    return {
        "name": name,
        "metric": info["metric"],
        "model": info.get("model") or {},
        "created_at": info.get("created_at") or None,
        "dimension": dim,
        "rows": rows.rows,
        "priorities": scores.rows,
        "triggers": listing.rows,
        "trigger_items": items.rows,
        "files": files,
    }


def _triggers_table(triggers: list[dict]) -> pa.Table:
    def column(key: str) -> list:
        return [t.get(key) for t in triggers]

    return pa.Table.from_pydict(
        {
            "id": column("id"),
            "status": column("status"),
            "note": column("note"),
            "selection": [json.dumps(t.get("selection") or {}) for t in triggers],
            "count": column("count"),
            "created_at": column("created_at"),
            "updated_at": column("updated_at"),
            "deliveries": [json.dumps(t.get("deliveries") or {}) for t in triggers],
        },
        schema=TRIGGERS_SCHEMA,
    )


class _Parts:
    """Parquet files ``<stem>-00000.parquet``, ``-00001`` ... of at most ``per_file`` rows
    (one file when None), written a table at a time; :meth:`close` gives their manifest
    entries."""

    def __init__(self, root: Path, stem: str, kind: str, per_file: int | None):
        self.root, self.stem, self.kind, self.per_file = root, stem, kind, per_file
        self.rows = 0
        self.files: list[dict] = []
        self._writer: pq.ParquetWriter | None = None
        self._in_file = 0

    def write(self, table: pa.Table) -> None:
        while table.num_rows:
            if self._writer is None:
                number = f"-{len(self.files):05d}" if self.per_file else ""
                path = f"{self.stem}{number}.parquet"
                self.files.append({"kind": self.kind, "path": path})
                self._writer = pq.ParquetWriter(self.root / path, table.schema, **_WRITE_OPTIONS)
                self._in_file = 0
            room = table.num_rows if self.per_file is None else self.per_file - self._in_file
            head = table.slice(0, room)
            self._writer.write_table(head)
            self._in_file += head.num_rows
            self.rows += head.num_rows
            table = table.slice(head.num_rows)
            if self.per_file is not None and self._in_file >= self.per_file:
                self._finish()

    def _finish(self) -> None:
        assert self._writer is not None
        self._writer.close()
        self._writer = None
        entry = self.files[-1]
        entry["rows"] = self._in_file
        entry.update(_digest(self.root / entry["path"], sync=True))

    def close(self) -> list[dict]:
        if self._writer is not None:
            self._finish()
        return self.files


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table``'s columns of ``schema``, in its order and types."""
    return pa.Table.from_arrays([table.column(f.name).cast(f.type) for f in schema], schema=schema)


def _empty_directory(root: Path) -> bool:
    """Make sure ``root`` is a directory with nothing in it; True if it was created."""
    if root.exists():
        if not root.is_dir():
            raise InvalidInput(f"{root} is a file; export into a new or empty directory")
        if any(root.iterdir()):
            raise InvalidInput(f"{root} is not empty; export into a new or empty directory")
        return False
    root.mkdir(parents=True)
    return True


def _remove(root: Path, created: bool) -> None:
    if created:
        shutil.rmtree(root, ignore_errors=True)
        return
    for child in root.iterdir():  # it was empty when the export began
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _write_manifest(root: Path, manifest: dict) -> None:
    tmp = root / f"{MANIFEST}.tmp"
    with open(tmp, "w") as out:
        json.dump(manifest, out, indent=2)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, root / MANIFEST)
    descriptor = os.open(root, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _digest(path: Path, sync: bool = False) -> dict:
    """Size and SHA-256 of a file (made durable first when ``sync``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        if sync:
            os.fsync(source.fileno())
        while chunk := source.read(1 << 20):
            digest.update(chunk)
        size = source.tell()
    return {"bytes": size, "sha256": digest.hexdigest()}


# --- import -----------------------------------------------------------------------
def import_from(
    call: Call,
    path: str | os.PathLike,
    spaces: str | list[str] | None = None,
    *,
    progress: bool | None = None,
    batch_rows: int = MAX_PAGE_ROWS,
) -> dict:
    """Restore ``spaces`` (default: all) of the back-up at ``path``; returns what was
    restored. Nothing is written unless every check passes, and a failure later removes
    every space this import created."""
    root = Path(path)
    manifest = read_manifest(root)
    entries = {s["name"]: s for s in manifest["spaces"]}
    names = list(entries) if spaces is None else _names(spaces)
    unknown = [name for name in names if name not in entries]
    if unknown:
        raise NotFound(f"the back-up holds no space named {', '.join(map(repr, unknown))}")
    existing = {s["name"] for s in call("spaces")[0]["spaces"]}
    taken = [name for name in names if name in existing]
    if taken:
        raise Conflict(
            f"space(s) {', '.join(map(repr, taken))} already exist here; delete them first or "
            "import the others with spaces=[...]"
        )
    chosen = [entries[name] for name in names]
    plans = [verify_space(root, entry) for entry in chosen]
    summary: dict = {
        "spaces": names,
        "rows": 0,
        "priorities": 0,
        "triggers": 0,
        "trigger_items": 0,
        "renumbered_triggers": {},
    }
    created: list[str] = []
    try:
        with _bar(progress, sum(e["rows"] for e in chosen), "import") as bar:
            for entry, plan in zip(chosen, plans, strict=True):
                _import_space(call, batch_rows, root, entry, plan, bar, created, summary)
    except BaseException as exc:
        left = []
        for name in reversed(created):
            try:
                call("delete_space", {"space": name})
            except ChromaError:
                left.append(name)  # the error that stopped the import is the one to raise
        if left and isinstance(exc, ChromaError):
            # the server went away: it removes what was imported when it starts again
            exc.detail = (
                f"the import was cut short: {exc.detail}. Nothing of it is kept: space(s) "
                f"{', '.join(map(repr, reversed(left)))} are removed when the server starts "
                "again (an import is all or nothing); import again once it answers"
            )
            exc.args = (exc.detail,)
        raise
    return summary


def _import_space(
    call: Call,
    batch_rows: int,
    root: Path,
    entry: dict,
    plan: dict,
    bar,
    created: list,
    summary: dict,
) -> None:
    name = entry["name"]
    bar.set_postfix_str(name)
    call(
        "restore_space",
        {
            "space": name,
            "metric": entry["metric"],
            "model": entry["model"],
            "created_at": entry["created_at"],
            "dim": entry["dimension"],
        },
    )
    created.append(name)
    page_rows = _page_rows(batch_rows, entry["dimension"])
    for rel in plan["rows"]:
        for table in _batches(root, rel, page_rows):
            call("restore_rows", {"space": name}, table)
            bar.update(table.num_rows)
    bar.set_postfix_str(f"{name}: priorities")
    for rel in plan["priorities"]:
        for table in _batches(root, rel, _page_rows(batch_rows, None)):
            call("restore_priorities", {"space": name}, table)
    bar.set_postfix_str(f"{name}: triggers")
    renumbered: dict[str, int] = {}
    groups = _item_groups(root, plan["trigger_items"], _page_rows(batch_rows, None))
    for trigger in plan["triggers"]:
        items = ITEMS_SCHEMA.empty_table()
        if trigger["count"]:
            owner, items = next(groups, (None, items))
            if owner != trigger["id"] or items.num_rows != trigger["count"]:
                raise InvalidBackup(f"the items of trigger {trigger['id']} changed meanwhile")
        restored = call(
            "restore_trigger",
            {"space": name, "trigger": trigger},
            items.drop_columns(["trigger_id"]),
        )[0]["trigger"]
        if restored["id"] != trigger["id"]:
            renumbered[str(trigger["id"])] = restored["id"]
    stored = call("space_info", {"space": name})[0]["space"]["count"]
    if stored != entry["rows"]:
        raise InvalidBackup(
            f"space {name!r} holds {stored} rows once imported, not {entry['rows']}"
        )
    # from here on the space is whole: a server that starts keeps it
    call("restore_finish", {"space": name})
    if renumbered:
        summary["renumbered_triggers"][name] = renumbered
    for key in ("rows", "priorities", "triggers", "trigger_items"):
        summary[key] += entry[key]


def _batches(root: Path, rel: str, rows: int) -> Iterator[pa.Table]:
    """The file's rows a page at a time, every Parquet page checked against its checksum."""
    try:
        with pq.ParquetFile(root / rel, page_checksum_verification=True) as source:
            for batch in source.iter_batches(batch_size=rows):
                yield pa.Table.from_batches([batch])
    except (pa.ArrowException, OSError) as exc:
        raise InvalidBackup(f"{rel} cannot be read: {exc}") from None


def _item_groups(root: Path, files: list[str], rows: int) -> Iterator[tuple[int, pa.Table]]:
    """Trigger items trigger by trigger: ``(trigger id, its items)`` in file order."""
    current: int | None = None
    pending: list[pa.Table] = []
    for rel in files:
        for table in _batches(root, rel, rows):
            ids = table.column("trigger_id").to_numpy()
            cuts = [0, *(np.flatnonzero(np.diff(ids)) + 1).tolist(), len(ids)]
            for start, stop in zip(cuts[:-1], cuts[1:], strict=False):
                if ids[start] != current:
                    if current is not None:
                        yield current, pa.concat_tables(pending)
                    current, pending = int(ids[start]), []
                pending.append(table.slice(start, stop - start))
    if current is not None:
        yield current, pa.concat_tables(pending)


# --- checking a back-up -------------------------------------------------------------
def read_manifest(root: Path) -> dict:
    """The manifest of the back-up at ``root``, its structure checked (not yet its files)."""
    path = root / MANIFEST
    if not path.is_file():
        raise InvalidBackup(f"{root} holds no {MANIFEST}: it is not a Chroma back-up")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise InvalidBackup(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidBackup(f"{path} is not the manifest of a Chroma back-up")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidBackup(f"{path} has no valid format_version: {version!r:.40}")
    if version > FORMAT_VERSION:
        raise InvalidBackup(
            f"the back-up has format version {version}, written by a newer Chroma "
            f"({manifest.get('chroma_version')}); this Chroma ({__version__}) reads version "
            f"{FORMAT_VERSION}: upgrade it to import"
        )
    spaces = manifest.get("spaces")
    if not isinstance(spaces, list):
        raise InvalidBackup(f"{path} lists no spaces")
    seen: set[str] = set()
    for entry in spaces:
        _check_entry(entry)
        if entry["name"] in seen:
            raise InvalidBackup(f"{path} lists space {entry['name']!r} twice")
        seen.add(entry["name"])
    return manifest


def _check_entry(entry) -> None:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise InvalidBackup("a space in the manifest has no name")
    name = entry["name"]
    if entry.get("metric") not in METRICS:
        raise InvalidBackup(f"space {name!r}: unknown metric {entry.get('metric')!r:.40}")
    if not isinstance(entry.get("model"), dict):
        raise InvalidBackup(f"space {name!r}: model must be an object")
    if entry.get("created_at") is not None and not isinstance(entry["created_at"], str):
        raise InvalidBackup(f"space {name!r}: created_at must be text")
    dim = entry.get("dimension")
    if dim is not None and not _count(dim):
        raise InvalidBackup(f"space {name!r}: dimension must be a positive integer or null")
    for key in KINDS:
        if not _count(entry.get(key), zero=True):
            raise InvalidBackup(f"space {name!r}: {key} must be a count")
    if entry["rows"] and dim is None:
        raise InvalidBackup(f"space {name!r} has rows but no dimension")
    files = entry.get("files")
    if not isinstance(files, list):
        raise InvalidBackup(f"space {name!r} lists no files")
    totals = dict.fromkeys(KINDS, 0)
    for item in files:
        if not (
            isinstance(item, dict)
            and item.get("kind") in KINDS
            and isinstance(item.get("path"), str)
            and _count(item.get("rows"), zero=True)
            and _count(item.get("bytes"), zero=True)
            and isinstance(item.get("sha256"), str)
        ):
            raise InvalidBackup(f"space {name!r}: a file entry is incomplete: {item!r:.200}")
        totals[item["kind"]] += item["rows"]
    for key in KINDS:
        if totals[key] != entry[key]:
            raise InvalidBackup(
                f"space {name!r}: the {key} files hold {totals[key]} rows, the manifest "
                f"counts {entry[key]}"
            )


def verify_space(root: Path, entry: dict) -> dict:
    """Check every file of one space against the manifest: where it lies, its size,
    SHA-256, Parquet footer, row count and columns (the embedding of the space's dimension),
    and that trigger items come trigger by trigger as the triggers count them. Returns the
    files by kind and the triggers to restore."""
    plan: dict = {kind: [] for kind in KINDS}
    for item in entry["files"]:
        rel, kind = item["path"], item["kind"]
        path = _inside(root, rel)
        if not path.is_file():
            raise InvalidBackup(f"{rel} is missing from the back-up")
        found = _digest(path)
        if found["bytes"] != item["bytes"] or found["sha256"] != item["sha256"].lower():
            raise InvalidBackup(
                f"{rel} does not match its checksum in the manifest: the file has changed "
                "or is damaged"
            )
        _check_parquet(path, rel, item["rows"], file_schema(kind, entry["dimension"]))
        plan[kind].append(rel)
    triggers = [t for rel in plan["triggers"] for t in _read(root, rel).to_pylist()]
    for trigger in triggers:
        trigger["selection"] = _json_object(trigger["selection"], "selection")
        trigger["deliveries"] = _json_object(trigger["deliveries"], "deliveries")
    plan["triggers"] = triggers
    owners = [_read(root, rel, ["trigger_id"]).column(0) for rel in plan["trigger_items"]]
    _check_groups(entry["name"], triggers, pa.chunked_array(owners, pa.int64()))
    return plan


def _check_parquet(path: Path, rel: str, rows: int, schema: pa.Schema) -> None:
    try:
        with pq.ParquetFile(path) as source:
            found, stored = source.metadata.num_rows, source.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise InvalidBackup(f"{rel} is not a readable Parquet file: {exc}") from None
    if found != rows:
        raise InvalidBackup(f"{rel} holds {found} rows, the manifest counts {rows}")
    for field in schema:
        if field.name not in stored.names or not stored.field(field.name).type.equals(field.type):
            have = stored.field(field.name).type if field.name in stored.names else "nothing"
            raise InvalidBackup(f"{rel}: column {field.name} should be {field.type}, is {have}")


def _check_groups(space: str, triggers: list[dict], owners: pa.ChunkedArray) -> None:
    """The items must come as one run per trigger with items, in the triggers' order, each
    as long as its trigger's count."""
    ids = owners.to_numpy()
    found = []
    if len(ids):
        starts = np.concatenate([[0], np.flatnonzero(np.diff(ids)) + 1])
        lengths = np.diff(np.append(starts, len(ids)))
        found = list(zip(ids[starts].tolist(), lengths.tolist(), strict=True))
    if found != [(t["id"], t["count"]) for t in triggers if t["count"]]:
        raise InvalidBackup(
            f"space {space!r}: the trigger items do not come trigger by trigger as the "
            "triggers count them"
        )


def _read(root: Path, rel: str, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(root / rel, columns=columns, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as exc:
        raise InvalidBackup(f"{rel} cannot be read: {exc}") from None


def _inside(root: Path, rel: str) -> Path:
    """``root / rel``, refused unless it lies inside the back-up."""
    if Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise InvalidBackup(f"file {rel!r:.200} lies outside the back-up")
    return root / rel


def _json_object(text, what: str) -> dict:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        value = None
    if not isinstance(value, dict):
        raise InvalidBackup(f"a trigger's {what} is not a JSON object: {text!r:.80}")
    return value


def _count(value, zero: bool = False) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= (0 if zero else 1)


# --- shared -----------------------------------------------------------------------
def _names(spaces) -> list[str]:
    if isinstance(spaces, str):
        return [spaces]
    try:
        names = list(spaces)
    except TypeError:
        raise InvalidInput("spaces must be a space name or a list of names") from None
    if not all(isinstance(n, str) for n in names):
        raise InvalidInput("spaces must be a space name or a list of names")
    return list(dict.fromkeys(names))


def _with_table(call: Call, op: str, params: dict) -> tuple[dict, pa.Table]:
    """The reply and table of an operation that answers with a table."""
    reply, table = call(op, params)
    if table is None:
        raise ServerError(f"{op} answered without the table it owes")
    return reply, table


def _page_rows(batch_rows: int, dim: int | None) -> int:
    """Rows a page: ``batch_rows``, fewer for wide vectors, and what a server takes."""
    return max(1, min(batch_rows, MAX_PAGE_ROWS, PAGE_BYTES // (4 * (dim or 1))))


def _id(trigger: dict) -> int:
    return int(trigger["id"])


def _bar(progress: bool | None, total: int, what: str):
    if progress is None:
        progress = total > 0 and sys.stderr.isatty()
    return tqdm(total=total, unit=" rows", unit_scale=True, disable=not progress, desc=what)
