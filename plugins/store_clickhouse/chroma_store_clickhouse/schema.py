"""Tables of the ClickHouse store, and their versioned migrations.

Shared tables hold the small, rarely written things (spaces, triggers); every space has its
own rows, tombstone and priority tables, named by the space's number, so that its vector
column can carry a fixed-dimension vector index and its sort key serves its own filters.
"""

from __future__ import annotations

import re

# Migration N brings a database from version N-1 to N. Append, never edit.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE IF NOT EXISTS spaces (
            name String,
            space_id UInt64,
            metric LowCardinality(String),
            dim UInt32,
            model String,
            created_at String,
            priority_generation UInt64,
            deleted UInt8,
            version UInt64
        ) ENGINE = ReplacingMergeTree(version) ORDER BY (name, space_id)""",
        """CREATE TABLE IF NOT EXISTS triggers (
            id UInt64,
            space_id UInt64,
            space String,
            status LowCardinality(String),
            note Nullable(String),
            selection String,
            count UInt64,
            created_at String,
            updated_at String,
            deliveries String,
            version UInt64
        ) ENGINE = ReplacingMergeTree(version) ORDER BY id""",
        """CREATE TABLE IF NOT EXISTS trigger_items (
            trigger_id UInt64,
            position UInt32,
            id String,
            input_uri Nullable(String),
            dataset Nullable(String),
            label Nullable(String),
            inference Nullable(String),
            priority Nullable(Float64)
        ) ENGINE = MergeTree ORDER BY (trigger_id, position)""",
    ),
)

# An insert is acknowledged only once its part is on disk, not just in the page cache.
DURABLE = "fsync_after_insert = 1, fsync_part_directory = 1"

# Migration 2: the key of each keyed batch, with the digest of its rows and the seqs it was
# given (see ClickHouseStore.add for the order of the inserts that makes this crash-safe).
# A key is kept a day at least (chroma_core.store.BATCH_KEY_RETENTION_SECONDS); ClickHouse
# drops it at a merge after that.
MIGRATIONS += (
    (
        f"""CREATE TABLE IF NOT EXISTS batch_keys (
            space_id UInt64,
            key String,
            fingerprint String,
            first_seq UInt64,
            count UInt64,
            added_at DateTime
        ) ENGINE = MergeTree ORDER BY (space_id, key)
        TTL added_at + INTERVAL 1 DAY
        SETTINGS {DURABLE}""",
    ),
)
# Migration 3: which generation of each space's inverted file readers search, its cells and
# the rows it was trained on (ivf.py); the last version written is the current one.
MIGRATIONS += (
    (
        """CREATE TABLE IF NOT EXISTS ivf_state (
            space_id UInt64,
            generation UInt32,
            cells UInt32,
            trained_rows UInt64,
            version UInt64
        ) ENGINE = ReplacingMergeTree(version) ORDER BY space_id""",
    ),
)
# Migration 4: settings the plugins keep per space (SpaceSettings); the last version written
# of a name is its value, ``present`` 0 when it was removed.
MIGRATIONS += (
    (
        f"""CREATE TABLE IF NOT EXISTS space_settings (
            space_id UInt64,
            name String,
            value String,
            present UInt8,
            version UInt64
        ) ENGINE = ReplacingMergeTree(version) ORDER BY (space_id, name)
        SETTINGS {DURABLE}""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

# A retried insert with the same token within this many recent blocks is stored once.
DEDUPLICATION_WINDOW = 1000


def space_tables(space_id: int) -> tuple[str, ...]:
    """The DDL of one space's tables (the id is an integer, never user text)."""
    sid = int(space_id)
    return (
        f"""CREATE TABLE IF NOT EXISTS rows_{sid} (
            seq UInt64,
            id String,
            dataset LowCardinality(String),
            context LowCardinality(String),
            input_uri Nullable(String),
            inference LowCardinality(Nullable(String)),
            label LowCardinality(Nullable(String)),
            metadata Nullable(String),
            embedding Array(Float32),
            output Array(Float32),
            has_output UInt8,
            INDEX id_lookup id TYPE bloom_filter GRANULARITY 4,
            INDEX seq_range seq TYPE minmax GRANULARITY 1
        ) ENGINE = MergeTree ORDER BY (dataset, context, seq)
        SETTINGS non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}, {DURABLE}""",
        # ids in key order, so a batch's ids are checked against millions by index look-ups
        f"""CREATE TABLE IF NOT EXISTS ids_{sid} (id String, seq UInt64)
        ENGINE = MergeTree ORDER BY id SETTINGS {DURABLE}""",
        # a delete is one insert here, so readers see all of it or none of it
        f"""CREATE TABLE IF NOT EXISTS deleted_{sid} (seq UInt64)
        ENGINE = MergeTree ORDER BY seq SETTINGS {DURABLE}""",
        # readers take the generation the space row names, so a rewrite switches at once
        f"""CREATE TABLE IF NOT EXISTS priorities_{sid} (
            generation UInt64,
            -- the row scored: a row added again under a deleted id has another seq
            seq UInt64,
            id String,
            priority Float64,
            components Nullable(String),
            computed_at Nullable(String)
        ) ENGINE = MergeTree ORDER BY (generation, id) SETTINGS {DURABLE}""",
    )


def vector_index(space_id: int, metric: str, dim: int) -> str | None:
    """DDL adding ClickHouse's HNSW index to a space's vectors (l2 and cosine only)."""
    distance = {"l2": "L2Distance", "cosine": "cosineDistance"}.get(metric)
    if distance is None:
        return None
    return (
        f"ALTER TABLE rows_{int(space_id)} ADD INDEX IF NOT EXISTS vectors embedding "
        f"TYPE vector_similarity('hnsw', '{distance}', {int(dim)})"
    )


# --- a cluster ---------------------------------------------------------------------
# Where the replicas of one table meet in ClickHouse Keeper: one path per shard, database and
# table, filled in by each server from its own macros.
REPLICA_PATH = "'/clickhouse/tables/{shard}/{database}/%s', '{replica}'"
_CREATE = re.compile(r"^(\s*CREATE (?:TABLE|DATABASE) IF NOT EXISTS [\w.]+)", re.S)
_ENGINE = re.compile(r"ENGINE = (Replacing)?MergeTree(?:\((\w*)\))?")
_TABLE_NAME = re.compile(r"CREATE TABLE IF NOT EXISTS ([\w.]+)")
_ALTER_OR_DROP = re.compile(r"^(\s*(?:ALTER TABLE|DROP TABLE IF EXISTS) [\w.]+)")
_DELETE = re.compile(r"^(\s*DELETE FROM [\w.]+)")


def on_cluster(statement: str, cluster: str) -> str:
    """``statement`` as it runs on every server of ``cluster``: DDL and lightweight deletes
    ``ON CLUSTER``, MergeTree engines replicated through ClickHouse Keeper (the shard and
    replica come from each server's ``{shard}`` and ``{replica}`` macros). Statements that
    are not DDL or deletes (inserts, selects) are returned as they are."""
    on = f" ON CLUSTER '{cluster}'"
    if _CREATE.match(statement):
        name = _TABLE_NAME.search(statement)
        statement = _CREATE.sub(lambda m: m.group(1) + on, statement, count=1)
        if name:
            path = REPLICA_PATH % name.group(1)

            def replicated(m: re.Match) -> str:
                kind = m.group(1) or ""
                version = f", {m.group(2)}" if m.group(2) else ""
                return f"ENGINE = Replicated{kind}MergeTree({path}{version})"

            statement = _ENGINE.sub(replicated, statement, count=1)
        return statement
    for pattern in (_ALTER_OR_DROP, _DELETE):
        if pattern.match(statement):
            return pattern.sub(lambda m: m.group(1) + on, statement, count=1)
    return statement
