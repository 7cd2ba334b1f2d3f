"""The Chroma service: every operation, whatever transport calls it.

The HTTP app and the embedded client both call this class; it validates input, asks the
store, and announces changes through the hooks. It never imports a plugin.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from dataclasses import replace

import numpy as np
import pluggy
import pyarrow as pa
import pyarrow.compute as pc

from chroma_core import filters, restore, selection
from chroma_core import watch as watching
from chroma_core.algorithm import Algorithm
from chroma_core.config import Settings
from chroma_core.context import PluginContext
from chroma_core.directory_lock import DirectoryLock
from chroma_core.fields import check_fields
from chroma_core.metrics import Metrics
from chroma_core.plugins import (
    describe_plugins,
    open_store,
    plugin_manager,
    plugin_settings,
)
from chroma_core.schema import embedding_matrix, embeddings_of, validate_rows
from chroma_core.store import (
    BatchAlreadyStored,
    FollowRows,
    NeighborSearch,
    PagedBackup,
    ReplaceRows,
    Restore,
    Store,
    repeated,
)
from chroma_wire import __version__, checks
from chroma_wire.checks import check_batch_key, check_space_name, check_unicode
from chroma_wire.errors import Conflict, DimensionMismatch, InvalidInput, NotFound, NotSupported
from chroma_wire.limits import (
    MAX_DIM,
    MAX_K,
    MAX_NEIGHBORS,
    MAX_PAGE_BYTES,
    MAX_PAGE_ROWS,
    MAX_QUERIES,
    MAX_WATCH_EVENTS,
    MAX_WATCH_SECONDS,
)
from chroma_wire.protocol import PROTOCOL_VERSION
from chroma_wire.rows import TEXT_FIELDS
from chroma_wire.types import (
    METRICS,
    NEIGHBOR_COLUMNS,
    TRIGGER_STATUSES,
    Neighbors,
    Result,
    SpaceInfo,
)

log = logging.getLogger("chroma.service")

#: neighbours in an answer at most for it to be joined with their rows in Python
SMALL_ANSWER = 64
#: how often a waiting watch looks again, and how many may wait at once
WATCH_POLL_SECONDS = 0.1
MAX_WAITING_WATCHES = 32


class Chroma:
    """One running Chroma: settings, a store, the plugins and the context they are handed."""

    def __init__(self, settings: Settings | None = None, pm: pluggy.PluginManager | None = None):
        self.settings = settings or Settings.from_env()
        self.pm = pm or plugin_manager()
        self.hook = self.pm.hook
        # before anything is opened: a bad value stops the start, naming its variable
        self.plugin_settings = plugin_settings(self.pm, self.settings)
        self.metrics = Metrics()
        self.settings.path.mkdir(parents=True, exist_ok=True)
        # before the store opens: a second service on this directory fails here, at once
        self._directory_lock = DirectoryLock(self.settings.path)
        try:
            self.store: Store = open_store(self.settings, self.pm, self.plugin_settings)
        except BaseException:
            self._directory_lock.release()
            raise
        self._algorithms: dict[str, Algorithm] = {}
        for batch in self.hook.chroma_algorithms():
            for algorithm in batch or ():
                self._algorithms[algorithm.name] = algorithm
        #: what every hook and algorithm is handed
        self.context = PluginContext(
            store=self.store,
            settings=self.settings,
            plugin_settings=self.plugin_settings,
            metrics=self.metrics,
            run=self._run,
            nearest_neighbors=self._search,
            trigger_retraining=self._rule_trigger,
        )
        self._closed = False
        self._watch_lock = threading.Lock()
        self._watchers = 0
        self._remove_unfinished_restores()
        self.hook.chroma_started(context=self.context)

    def _remove_unfinished_restores(self) -> None:
        """Delete every space an import was writing when its server stopped: an import is
        all or nothing, across crashes too."""
        if not isinstance(self.store, Restore):
            return
        for name in self.store.unfinished_restores():
            log.warning(
                "space %r was being imported when Chroma last stopped; the part imported is "
                "removed now: import it again",
                name,
            )
            self.delete_space(name)

    # --- plugin support -----------------------------------------------------
    def version(self) -> dict:
        return {"version": __version__, "protocol": PROTOCOL_VERSION, "store": self.store.name}

    def plugins(self) -> list[dict]:
        return describe_plugins(self.pm, self.plugin_settings)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.hook.chroma_shutdown(context=self.context)
            self.store.close()
        finally:
            self._directory_lock.release()

    # --- spaces -------------------------------------------------------------
    def space(self, name: str, metric: str = "l2", model: dict | None = None) -> SpaceInfo:
        """Get space ``name``, creating it if absent; a different metric is a conflict."""
        check_space_name(name)
        if metric not in METRICS:
            raise InvalidInput(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
        if model is not None and not isinstance(model, dict):
            raise InvalidInput(f"model must be a dict, got {type(model).__name__}")
        try:
            # what every store can keep: NaN and infinity are not JSON
            json.dumps(model, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"model must be JSON-serialisable: {exc}") from None
        try:
            info = self.store.get_space(name)
        except NotFound:
            try:
                return self.store.create_space(name, metric, model or {})
            except Conflict:
                info = self.store.get_space(name)
        if info.metric != metric:
            raise Conflict(f"space {name!r} exists with metric {info.metric!r}, not {metric!r}")
        return info

    def space_info(self, space: str) -> SpaceInfo:
        """The space with its row count, for callers who show it."""
        check_space_name(space)
        return self.store.get_space(space, count=True)

    def status(self, space: str) -> dict:
        """The space with its row count and what each plugin reports of it (its index)."""
        info = self.space_info(space)
        out: dict = {"space": info.to_json()}
        for part in self.hook.chroma_space_status(context=self.context, space=info):
            out.update(part or {})
        return out

    def _space(self, name: str) -> SpaceInfo:
        """The space without its row count (which a large store may take a while to count)."""
        check_space_name(name)
        return self.store.get_space(name, count=False)

    def spaces(self) -> list[SpaceInfo]:
        return self.store.list_spaces()

    def delete_space(self, space: str) -> bool:
        info = self._space(space)
        self.store.delete_space(space)
        self.hook.chroma_space_deleted(context=self.context, space=info)
        return True

    # --- rows ---------------------------------------------------------------
    def add(
        self, space: str, rows: pa.Table | None = None, batch_key: str | None = None
    ) -> list[str]:
        """Validate and store a batch; returns its ids. Ids absent from ``rows`` are made.

        A ``batch_key`` names the batch: sent again with the same key, it is stored once and
        answered with the same ids (see :meth:`Store.add`)."""
        info = self._space(space)
        if rows is None:
            raise InvalidInput("add needs the rows as an Arrow table")
        batch_key = check_batch_key(batch_key)
        if isinstance(rows, pa.Table) and "id" not in rows.column_names:
            rows = rows.append_column("id", _new_ids(rows.num_rows, batch_key))
        rows = validate_rows(rows, info.dim)
        if batch_key is None:
            seqs = self.store.add(space, rows)
        else:
            try:
                seqs = self.store.add(space, rows, batch_key=batch_key)
            except BatchAlreadyStored:
                # its first add was acknowledged and announced to the plugins already; the
                # same rows mean the same ids
                log.info("batch %s of space %s was stored before, not again", batch_key, space)
                return rows.column("id").to_pylist()
        self.metrics.rows_added.inc(len(seqs), space=info.name)
        self.hook.chroma_rows_added(
            context=self.context, space=_holding(info, rows), seqs=seqs, rows=rows
        )
        return rows.column("id").to_pylist()

    def upsert(
        self, space: str, rows: pa.Table | None = None, batch_key: str | None = None
    ) -> list[str]:
        """Store a batch where each row whose id is stored replaces that row (embedding
        and all) and the others are added; returns the batch's ids. A replaced row loses
        its score (it is scored again as a new input). All or nothing; a ``batch_key``
        makes a resend store nothing twice, as in :meth:`add`."""
        info = self._space(space)
        if rows is None:
            raise InvalidInput("upsert needs the rows as an Arrow table")
        batch_key = check_batch_key(batch_key)
        if isinstance(rows, pa.Table) and "id" not in rows.column_names:
            raise InvalidInput("upsert needs the ids of the rows: an id column")
        return self._replace(info, validate_rows(rows, info.dim), batch_key)

    def update(
        self, space: str, rows: pa.Table | None = None, batch_key: str | None = None
    ) -> list[str]:
        """Change catalogue fields of stored rows: ``rows`` holds ``id`` and the columns to
        set (``dataset``, ``context``, ``input_uri``, ``inference``, ``label``,
        ``metadata``, ``output``; a null sets null); the others keep their values. Every id
        must be stored (``NotFound`` naming those that are not, and nothing changes)."""
        info = self._space(space)
        if not isinstance(rows, pa.Table) or "id" not in rows.column_names:
            raise InvalidInput("update needs an Arrow table with an id column")
        settable = set(UPDATABLE)
        unknown = sorted(set(rows.column_names) - settable - {"id"})
        if unknown:
            hint = "; to change embeddings use upsert" if "embedding" in unknown else ""
            raise InvalidInput(
                f"update cannot set {', '.join(unknown)}{hint} (it sets {', '.join(UPDATABLE)})"
            )
        batch_key = check_batch_key(batch_key)
        ids = _text_ids(rows.column("id"))
        if len(set(ids)) != len(ids):
            raise InvalidInput(f"id {repeated(ids)!r:.200} appears twice in the update")
        stored = self.store.get(space, ids=ids, include_embeddings=True)
        if stored.num_rows != len(ids):
            missing = sorted(set(ids) - set(stored.column("id").to_pylist()))
            raise NotFound(
                f"{len(missing)} id(s) not in space {space!r}, nothing was updated: "
                f"{', '.join(map(repr, missing[:5]))}{' ...' if len(missing) > 5 else ''}"
            )
        # the stored rows in the order of the update's ids, then its columns over theirs
        position = {one: i for i, one in enumerate(stored.column("id").to_pylist())}
        stored = stored.take(pa.array([position[one] for one in ids]))
        columns = {name: stored.column(name) for name in (*TEXT_FIELDS, "embedding", "output")}
        for name in rows.column_names:
            columns[name] = rows.column(name)
        full = validate_rows(pa.table(columns), info.dim)
        return self._replace(info, full, batch_key)

    def _replace(self, info: SpaceInfo, rows: pa.Table, batch_key: str | None) -> list[str]:
        store = ReplaceRows.of(self.store)
        try:
            seqs, replaced = store.replace(info.name, rows, batch_key=batch_key)
        except BatchAlreadyStored:
            log.info("batch %s of space %s was stored before, not again", batch_key, info.name)
            return rows.column("id").to_pylist()
        if len(replaced):
            self.hook.chroma_rows_deleted(context=self.context, space=info, seqs=replaced)
        self.metrics.rows_added.inc(len(seqs), space=info.name)
        self.hook.chroma_rows_added(
            context=self.context, space=_holding(info, rows), seqs=seqs, rows=rows
        )
        ids = rows.column("id").to_pylist()
        if rows.column("label").null_count < rows.num_rows:
            self._finish_labelled_triggers(info.name, set(ids))
        return ids

    def get(
        self, space: str, *, ids=None, where=None, limit=None, offset=0, include_embeddings=False
    ) -> pa.Table:
        self._space(space)
        parsed = filters.parse(where)
        table = self.store.get(
            space,
            ids=_ids(ids),
            where=parsed,
            limit=checks.optional_int("limit", limit, 0),
            offset=checks.optional_int("offset", offset, 0) or 0,
            include_embeddings=checks.flag("include_embeddings", include_embeddings),
        )
        # with a page past the start, or none asked for, an empty answer tells nothing
        if table.num_rows == 0 and not offset and limit != 0:
            check_fields(self.store, space, parsed, "get")
        return table.drop_columns(["seq"])

    def count(self, space: str, where=None) -> int:
        self._space(space)
        parsed = filters.parse(where)
        found = self.store.count(space, parsed)
        if found == 0:
            check_fields(self.store, space, parsed, "count")
        return found

    def delete(self, space: str, *, ids=None, where=None) -> int:
        info = self._space(space)
        ids = _ids(ids)
        parsed = filters.parse(where)
        if ids is None and parsed is None:
            raise InvalidInput("delete needs ids or where; to drop a whole space use delete_space")
        seqs = self.store.delete(space, ids=ids, where=parsed)
        if len(seqs):
            self.hook.chroma_rows_deleted(context=self.context, space=info, seqs=seqs)
        else:
            check_fields(self.store, space, parsed, "delete")
        return int(len(seqs))

    # --- neighbours ---------------------------------------------------------
    def nearest_neighbors(
        self, space: str, *, queries: np.ndarray | None = None, ids=None, k: int = 10, where=None
    ) -> Result:
        """The k nearest stored rows of each query vector, or of each stored id (not itself)."""
        info = self._space(space)
        k = checks.required_int("k", k, 1)
        if k > MAX_K:
            raise InvalidInput(f"k must be between 1 and {MAX_K}")
        parsed = filters.parse(where)
        ids = _ids(ids)
        if (queries is None) == (ids is None):
            raise InvalidInput("nearest_neighbors needs either queries or ids, not both")
        if ids is not None and not ids:
            raise InvalidInput("nearest_neighbors needs at least one id in ids")
        self_seqs = None
        if ids is not None:
            found = self.store.get(space, ids=ids, include_embeddings=True)
            if found.num_rows != len(set(ids)):
                missing = sorted(set(ids) - set(found.column("id").to_pylist()))
                raise NotFound(f"id(s) not in space {space!r}: {', '.join(missing[:5])}")
            order = {v: i for i, v in enumerate(found.column("id").to_pylist())}
            take = [order[i] for i in ids]
            found = found.take(take)
            queries = embeddings_of(found)
            self_seqs = found.column("seq").to_numpy()
            labels = pa.array(ids, pa.string())
        else:
            queries = _queries(queries, info)
            labels = pa.array(np.arange(len(queries)))
        if len(queries) * k > MAX_NEIGHBORS:
            raise InvalidInput(
                f"nearest_neighbors asks for {len(queries) * k:,} neighbours ({len(queries):,} "
                f"queries x k={k}), more than the {MAX_NEIGHBORS:,} one call returns; send at "
                f"most {max(1, MAX_NEIGHBORS // k):,} queries a call (the Python client does)"
            )
        if info.dim is None:
            return Result(_neighbors_table(labels[:0], [], [], [], None), {"method": "empty"})
        ask = k + 1 if self_seqs is not None else k
        answer = self._search(info, queries, ask, parsed)
        seqs, dists = answer.seqs, answer.distances
        if self_seqs is not None:
            seqs, dists = _drop_self(seqs, dists, self_seqs, k)
        valid = seqs >= 0
        q_index = np.nonzero(valid)[0]
        ranks = np.nonzero(valid)[1]
        flat_seqs = seqs[valid]
        rows = answer.rows
        if rows is None:
            rows = self.store.rows_by_seq(space, np.unique(flat_seqs))
        return Result(
            _neighbors_table(labels.take(pa.array(q_index)), ranks, flat_seqs, dists[valid], rows),
            dict(answer.meta),
        )

    def _search(
        self, info: SpaceInfo, queries: np.ndarray, k: int, where: filters.Filter | None
    ) -> Neighbors:
        """The k-NN answer to checked ``queries``: from the store itself when it searches
        its own vectors (:class:`NeighborSearch`) and answers, else from the
        ``chroma_nearest_neighbors`` hook."""
        if isinstance(self.store, NeighborSearch):
            answer = self.store.nearest_neighbors(info, queries, k, where)
            if answer is not None:
                return answer
        answer = self.hook.chroma_nearest_neighbors(
            context=self.context, space=info, queries=queries, k=k, where=where
        )
        if answer is None:
            raise NotFound("no installed plugin answers nearest-neighbour queries")
        return answer

    # --- algorithms ---------------------------------------------------------
    def run(self, space: str, algorithm: str, params: dict | None = None) -> Result:
        info = self._space(space)
        found = self._algorithm(algorithm)
        if params is not None and not isinstance(params, dict):
            raise InvalidInput("algorithm params must be a dict")
        return found.run(self.context, info, dict(params or {}))

    def _run(self, info: SpaceInfo, algorithm: str, params: dict) -> Result:
        """A plugin's run of another algorithm (``context.run``)."""
        return self._algorithm(algorithm).run(self.context, info, dict(params))

    def _rule_trigger(self, info: SpaceInfo, rule: dict, exclude: frozenset[str]) -> dict:
        """A plugin's trigger from a rule (``context.trigger_retraining``)."""
        return self._trigger(
            info,
            rule.get("n"),
            rule.get("min_priority"),
            rule.get("where"),
            rule.get("note"),
            rule.get("strategy", "top_priority"),
            None,
            exclude,
            {"name": rule["name"], "id": rule["id"]},
        )

    def _algorithm(self, name: str) -> Algorithm:
        if name not in self._algorithms:
            raise NotFound(
                f"unknown algorithm {name!r}; installed: "
                f"{', '.join(sorted(self._algorithms)) or 'none'}"
            )
        return self._algorithms[name]

    def algorithms(self) -> list[dict]:
        return [
            {"name": a.name, "description": a.description}
            for a in sorted(self._algorithms.values(), key=lambda a: a.name)
        ]

    # --- priorities and triggers --------------------------------------------
    def priorities(self, space: str, *, n=100, where=None, min_priority=None) -> pa.Table:
        self._space(space)
        parsed = filters.parse(where)
        table = self.store.priorities(
            space,
            n=checks.optional_int("n", n, 0),
            where=parsed,
            min_priority=checks.optional_float("min_priority", min_priority),
        )
        if table.num_rows == 0:
            check_fields(self.store, space, parsed, "priorities")
        return table

    def trigger_retraining(
        self,
        space: str,
        *,
        n=None,
        min_priority=None,
        where=None,
        note=None,
        strategy: str = "top_priority",
        duplicate_radius=None,
    ) -> dict:
        """Record a trigger holding the scored inputs selected, then announce it.

        ``top_priority`` takes the highest priorities; ``diverse`` spends a budget of ``n``
        on high priorities spread over the space, skipping near-duplicates of inputs
        already picked (:mod:`chroma_core.selection`)."""
        info = self._space(space)
        n = checks.optional_int("n", n, 1)
        min_priority = checks.optional_float("min_priority", min_priority)
        if note is not None and (not isinstance(note, str) or len(note) > 10_000):
            raise InvalidInput("note must be a string of at most 10,000 characters")
        if note is not None:
            check_unicode("note", note)
        if strategy not in selection.STRATEGIES:
            raise InvalidInput(
                f"unknown strategy {strategy!r:.40}; use one of {', '.join(selection.STRATEGIES)}"
            )
        if duplicate_radius is not None:
            duplicate_radius = checks.optional_float("duplicate_radius", duplicate_radius)
            if strategy != "diverse" or duplicate_radius < 0:
                raise InvalidInput("duplicate_radius is a distance >= 0, for strategy 'diverse'")
        if n is None and (min_priority is None or strategy == "diverse"):
            raise InvalidInput(
                "trigger_retraining needs n or min_priority to select inputs "
                "(strategy 'diverse' needs n, its budget)"
            )
        return self._trigger(info, n, min_priority, where, note, strategy, duplicate_radius)

    def _trigger(
        self,
        info: SpaceInfo,
        n: int | None,
        min_priority: float | None,
        where: dict | None,
        note: str | None,
        strategy: str,
        duplicate_radius: float | None,
        exclude: frozenset[str] = frozenset(),
        rule: dict | None = None,
    ) -> dict:
        """The selection and recording of :meth:`trigger_retraining` once its arguments are
        checked; inputs in ``exclude`` are never taken, and ``rule`` (the trigger rule that
        fired, when one did) is kept in the trigger's selection."""
        space = info.name
        pool = n
        if strategy == "diverse" and n is not None:
            pool = selection.pool_size(n, 1 << 62)
        if pool is not None and exclude:
            pool += len(exclude)
        scored = self.store.priorities(
            space, n=pool, where=filters.parse(where), min_priority=min_priority
        )
        if exclude and scored.num_rows:
            taken = pc.is_in(scored.column("id"), pa.array(sorted(exclude), pa.string()))
            scored = scored.filter(pc.invert(taken))
            if n is not None and strategy == "top_priority":
                scored = scored.slice(0, n)
        if scored.num_rows == 0:
            raise InvalidInput(
                f"no scored inputs in space {space!r} match the selection; "
                "run compute_priorities first or widen the selection"
            )
        record = {"strategy": strategy, "n": n, "min_priority": min_priority, "where": where}
        if rule is not None:
            record["rule"] = rule
        if strategy == "diverse":
            scored, record = self._diverse(info, scored, n, duplicate_radius, record)
        items = scored.select(["id", "input_uri", "dataset", "label", "inference", "priority"])
        # recorded only if the space is still the one its scores were read from
        trigger = self.store.create_trigger(
            info.name, items, note, record, space_id=info.space_id or None
        )
        self.hook.chroma_trigger_created(context=self.context, trigger=trigger, items=items)
        return self.store.get_trigger(trigger["id"])

    def _diverse(self, info: SpaceInfo, scored: pa.Table, n, radius, record: dict):
        ids = scored.column("id").to_pylist()
        stored = self.store.get(info.name, ids=ids, include_embeddings=True)
        at = {v: i for i, v in enumerate(stored.column("id").to_pylist())}
        # a row deleted since it was scored drops out of the pool
        keep = [i for i, v in enumerate(ids) if v in at]
        scored = scored.take(keep)
        ids = [ids[i] for i in keep]
        vectors = embeddings_of(stored.take([at[v] for v in ids]))
        priorities = scored.column("priority").to_numpy()
        chosen = selection.diverse(vectors, priorities, n, info.metric, radius)
        duplicates = sorted(chosen.duplicates.items())[: selection.NAMED_DUPLICATES]
        record |= {
            "pool": len(ids),
            "duplicate_radius": chosen.duplicate_radius,
            "duplicates_skipped": len(chosen.duplicates),
            "duplicates": [{"id": ids[d], "of": ids[p]} for d, p in duplicates],
        }
        return scored.take(chosen.picked), record

    def watch(self, space: str, *, after=None, min_priority=None, where=None, wait=0.0, limit=1000):
        """New scored inputs and triggers of ``space`` after position ``after`` (None: from
        now), waiting up to ``wait`` seconds for one (:mod:`chroma_core.watch`)."""
        space_id = self._space(space).space_id
        store = self.store
        if not isinstance(store, FollowRows):
            raise NotSupported(f"the {store.name} store cannot be watched (it cannot follow rows)")
        min_priority = checks.optional_float("min_priority", min_priority)
        wait = checks.required_float("wait", wait, 0, MAX_WATCH_SECONDS)
        limit = checks.required_int("limit", limit, 1, MAX_WATCH_EVENTS)
        parsed = filters.parse(
            watching.NOT_TRAINING if where is None else {"$and": [watching.NOT_TRAINING, where]}
        )
        position = (
            watching.now(store, space, space_id)
            if after is None
            else watching.parse_position(after)
        )
        with self._watch_lock:
            # past this many waiting at once, a watch answers at once (its client asks
            # again): waiting watches each hold a worker thread
            if self._watchers >= MAX_WAITING_WATCHES:
                wait = 0.0
            self._watchers += 1
        try:
            deadline = time.monotonic() + wait
            while True:
                answer = watching.events_after(
                    store, space, position, min_priority, parsed, limit, space_id
                )
                if (
                    answer["events"]
                    or answer["replaced"]
                    or self._closed
                    or time.monotonic() >= deadline
                ):
                    return answer
                position = watching.parse_position(answer["position"])
                time.sleep(min(WATCH_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        finally:
            with self._watch_lock:
                self._watchers -= 1

    def triggers(self, space: str | None = None, status: str | None = None) -> list[dict]:
        if space is not None:
            self._space(space)
        if status is not None and status not in TRIGGER_STATUSES:
            raise InvalidInput(
                f"unknown trigger status {status!r}; use one of {', '.join(TRIGGER_STATUSES)}"
            )
        found = self.store.list_triggers(space, status)
        for trigger in found:
            # how many of its inputs have been labelled since it was recorded
            items = self._items_with_labels(trigger["id"], trigger["space"])
            trigger["labelled"] = int(sum(items.column("labelled").to_pylist()))
        return found

    def set_trigger_status(self, trigger_id: int, status: str) -> dict:
        trigger_id = checks.required_int("trigger_id", trigger_id, 1)
        if status not in TRIGGER_STATUSES:
            raise InvalidInput(
                f"unknown trigger status {status!r}; use one of {', '.join(TRIGGER_STATUSES)}"
            )
        return self.store.update_trigger(trigger_id, status=status)

    def trigger_items(self, trigger_id: int) -> pa.Table:
        """The inputs a trigger selected, as selected, with ``labelled``: whether the input
        has been labelled since (it now carries a label, another than it had), and
        ``label_now``, its label now (null for an input deleted since)."""
        trigger_id = checks.required_int("trigger_id", trigger_id, 1)
        return self._items_with_labels(trigger_id, self.store.get_trigger(trigger_id)["space"])

    def _items_with_labels(self, trigger_id: int, space: str) -> pa.Table:
        items = self.store.trigger_items(trigger_id)
        ids = items.column("id").to_pylist()
        now = self.store.get(space, ids=ids) if ids else None
        current = {} if now is None else dict(
            zip(now.column("id").to_pylist(), now.column("label").to_pylist(), strict=True)
        )  # fmt: skip
        then = items.column("label").to_pylist()
        label_now = [current.get(one) for one in ids]
        labelled = [new is not None and new != old for new, old in zip(label_now, then,
                                                                        strict=True)]  # fmt: skip
        return items.append_column("labelled", pa.array(labelled, pa.bool_())).append_column(
            "label_now", pa.array(label_now, pa.string())
        )

    def _finish_labelled_triggers(self, space: str, changed: set[str]) -> None:
        """Move to done each open trigger of ``space`` that holds one of the ``changed``
        inputs and whose inputs are all labelled now."""
        for trigger in self.store.list_triggers(space, None):
            if trigger["status"] not in ("pending", "acknowledged"):
                continue
            items = self._items_with_labels(trigger["id"], space)
            if not changed & set(items.column("id").to_pylist()):
                continue
            if items.num_rows and all(items.column("labelled").to_pylist()):
                self.store.update_trigger(trigger["id"], status="done")
                log.info("trigger %s of %s is done: its inputs are labelled", trigger["id"],
                         space)  # fmt: skip

    # --- back-up and restore ------------------------------------------------
    def export_rows(self, space: str, *, after_seq=0, limit=None) -> tuple[dict, pa.Table]:
        """Rows after seq ``after_seq`` in seq order, at most ``limit``, with every stored
        column and their seq, and the space's largest seq, read before the page (rows above
        it arrived after an export began)."""
        pages = PagedBackup.of(self.store)
        info = self._space(space)
        after_seq = checks.required_int("after_seq", after_seq, 0)
        # a page may come back shorter than asked: wide vectors make fewer rows a page
        limit = min(_page_limit(limit), max(1, MAX_PAGE_BYTES // (4 * (info.dim or 1))))
        max_seq = self.store.max_seq(space)
        page = pages.rows_page(space, after_seq=after_seq, limit=limit)
        return {"max_seq": max_seq}, page

    def export_priorities(self, space: str, *, after_id=None, limit=None) -> pa.Table:
        """Up to ``limit`` stored scores with an id above ``after_id``, in id order, with the
        seq of the row each scores."""
        pages = PagedBackup.of(self.store)
        self._space(space)
        if after_id is not None and not isinstance(after_id, str):
            raise InvalidInput(f"after_id must be a string, got {type(after_id).__name__}")
        return pages.priorities_page(space, after_id=after_id, limit=_page_limit(limit))

    def restore_space(
        self, space: str, metric: str = "l2", model: dict | None = None, created_at=None, dim=None
    ) -> SpaceInfo:
        """Create ``space`` to restore an export into, with its creation time and dimension
        when given; ``Conflict`` if it exists."""
        target = Restore.of(self.store)
        check_space_name(space)
        if metric not in METRICS:
            raise InvalidInput(f"unknown metric {metric!r:.40}; use one of {', '.join(METRICS)}")
        if model is not None and not isinstance(model, dict):
            raise InvalidInput(f"model must be a dict, got {type(model).__name__}")
        created_at = restore.check_time("created_at", created_at)
        dim = checks.optional_int("dim", dim, 1)
        if dim is not None and dim > MAX_DIM:
            raise InvalidInput(f"dim must be at most {MAX_DIM}, got {dim}")
        return target.restore_space(SpaceInfo(space, metric, dim, 0, model or {}, created_at or ""))

    def restore_finish(self, space: str) -> bool:
        """Mark a space :meth:`restore_space` made as whole: until then, a server that
        starts removes it (the import that wrote it was cut short)."""
        Restore.of(self.store).finish_restore(space)
        return True

    def restore_rows(self, space: str, rows: pa.Table | None = None) -> int:
        """Store exported rows under the seqs they had (column ``seq``) and announce them
        as any add is announced; returns how many."""
        target = Restore.of(self.store)
        info = self._space(space)
        if not isinstance(rows, pa.Table) or "seq" not in rows.column_names:
            raise InvalidInput("restore_rows needs the rows as an Arrow table with a seq column")
        seqs = restore.check_seqs(rows.column("seq"))
        rows = validate_rows(rows.drop_columns(["seq"]), info.dim)
        target.restore_rows(space, rows, seqs)
        self.hook.chroma_rows_added(
            context=self.context, space=_holding(info, rows), seqs=seqs, rows=rows
        )
        return len(seqs)

    def restore_priorities(self, space: str, scores: pa.Table | None = None) -> int:
        """Add exported scores to the space verbatim; every id must be a stored row without
        a score. Returns how many."""
        target = Restore.of(self.store)
        self._space(space)
        scores = restore.check_scores(scores)
        target.restore_priorities(space, scores)
        return scores.num_rows

    def restore_trigger(self, space: str, trigger, items: pa.Table | None = None) -> dict:
        """Store an exported trigger with its items, without delivering it again; it keeps
        its id unless another trigger holds it."""
        target = Restore.of(self.store)
        self._space(space)
        trigger = restore.check_trigger(trigger)
        items = restore.check_items(items)
        if trigger["count"] != items.num_rows:
            raise InvalidInput(
                f"trigger {trigger['id']} counts {trigger['count']} items but "
                f"{items.num_rows} came with it"
            )
        return target.restore_trigger(space, trigger, items)


def _holding(info: SpaceInfo, rows: pa.Table) -> SpaceInfo:
    """``info`` once ``rows`` (validated) are stored: a space's first batch sets its
    dimension, which plugins announced of it need."""
    if info.dim is not None:
        return info
    return replace(info, dim=rows.schema.field("embedding").type.list_size)


def _new_ids(n: int, batch_key: str | None) -> pa.Array:
    """Ids for rows sent without them; a keyed batch gets the same ids each time it is sent,
    so that it is recognised as the same batch."""
    if batch_key is None:
        return pa.array([uuid.uuid4().hex for _ in range(n)], pa.string())
    prefix = hashlib.sha256(batch_key.encode()).hexdigest()[:24]
    return pa.array([f"{prefix}-{i}" for i in range(n)], pa.string())


#: the columns ``update`` sets
UPDATABLE = ("dataset", "context", "input_uri", "inference", "label", "metadata", "output")


def _text_ids(column: pa.ChunkedArray) -> list[str]:
    """The ids of an update, checked as ids are checked everywhere."""
    if column.null_count:
        raise InvalidInput("id is missing (null) in some rows of the update")
    ids = column.cast(pa.string()).to_pylist()
    return _ids(ids) or []


def _ids(ids) -> list[str] | None:
    if ids is None:
        return None
    if isinstance(ids, str):
        ids = [ids]
    if isinstance(ids, dict):
        raise InvalidInput("ids must be a list of strings, got an object")
    if isinstance(ids, pa.Array | pa.ChunkedArray):
        ids = ids.to_pylist()
    try:
        ids = list(ids)
    except TypeError:
        raise InvalidInput(f"ids must be a list of strings, got {type(ids).__name__}") from None
    if not all(isinstance(i, str) for i in ids):
        raise InvalidInput("ids must be strings")
    joined = "".join(ids)
    check_unicode("ids", joined)
    if "\x00" in joined:
        # stores look ids up through SQLite's JSON functions, which end text at a NUL
        raise InvalidInput("ids must not contain NUL characters")
    return ids


def _page_limit(limit) -> int:
    limit = checks.required_int("limit", limit, 1)
    if limit > MAX_PAGE_ROWS:
        raise InvalidInput(f"limit must be at most {MAX_PAGE_ROWS} rows a page, got {limit}")
    return limit


def _queries(queries, info: SpaceInfo) -> np.ndarray:
    if isinstance(queries, pa.Table):
        if "embedding" not in queries.column_names:
            raise InvalidInput("the queries table needs an 'embedding' column")
        matrix = embedding_matrix(queries.column("embedding"), queries.num_rows)
        if info.dim is not None and matrix.shape[1] != info.dim:
            raise DimensionMismatch(
                f"queries have dimension {matrix.shape[1]} but this space holds {info.dim}"
            )
    else:
        matrix = np.asarray(queries, dtype=np.float32)
        if matrix.ndim == 1:
            matrix = matrix[None, :]
        if matrix.ndim != 2 or matrix.shape[0] == 0:
            raise InvalidInput("queries must be a non-empty (n, d) array")
        if not np.isfinite(matrix).all():
            raise InvalidInput("queries contain NaN or infinite values")
        if info.dim is not None and matrix.shape[1] != info.dim:
            raise DimensionMismatch(
                f"queries have dimension {matrix.shape[1]} but this space holds {info.dim}"
            )
    if len(matrix) > MAX_QUERIES:
        raise InvalidInput(f"at most {MAX_QUERIES} queries per call, got {len(matrix)}")
    return np.ascontiguousarray(matrix)


def _drop_self(seqs, dists, self_seqs, k):
    is_self = seqs == self_seqs[:, None]
    # drop the row itself where found, otherwise the farthest of the k + 1
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), seqs.shape[1] - 1)
    keep = np.ones(seqs.shape, dtype=bool)
    keep[np.arange(len(seqs)), drop] = False
    shape = (len(seqs), seqs.shape[1] - 1)
    return seqs[keep].reshape(shape)[:, :k], dists[keep].reshape(shape)[:, :k]


def _small_neighbors_table(query: pa.Array, rank, seqs, distances, rows: pa.Table) -> pa.Table:
    """:func:`_neighbors_table` of a few neighbours, joined in Python: for a single query,
    a fraction of the time of Arrow's kernels, each of which costs more to call than
    the work it does on ten rows."""
    stored = rows.select(["seq", "id", *NEIGHBOR_COLUMNS]).to_pydict()
    at = {seq: i for i, seq in enumerate(stored["seq"])}
    # a row deleted between the search and this look-up drops out here
    keep = [j for j, seq in enumerate(seqs.tolist()) if seq in at]
    rows_at = [at[seq] for seq in seqs[keep].tolist()]
    schema = rows.schema
    columns = [
        query.take(pa.array(keep, pa.int64())),
        pa.array(np.asarray(rank, dtype=np.int32)[keep]),
        pa.array([stored["id"][i] for i in rows_at], schema.field("id").type),
        pa.array(np.asarray(distances, dtype=np.float32)[keep]),
        *[
            pa.array([stored[c][i] for i in rows_at], schema.field(c).type)
            for c in NEIGHBOR_COLUMNS
        ],
    ]
    return pa.Table.from_arrays(
        columns, names=["query", "rank", "id", "distance", *NEIGHBOR_COLUMNS]
    )


def _neighbors_table(query: pa.Array, rank, seqs, distances, rows: pa.Table | None) -> pa.Table:
    """One row per (query, neighbour); ``query`` is the query's id, or its index."""
    seqs = np.asarray(seqs, dtype=np.int64)
    if rows is None or rows.num_rows == 0:
        rows = pa.table(
            {"seq": pa.array([], pa.int64()), "id": pa.array([], pa.string())}
            | {c: pa.array([], pa.string()) for c in NEIGHBOR_COLUMNS}
        )
    if len(seqs) <= SMALL_ANSWER:
        return _small_neighbors_table(query, rank, seqs, distances, rows)
    stored = rows.column("seq").to_numpy()
    order = np.argsort(stored)
    at = np.searchsorted(stored[order], seqs).clip(max=max(len(stored) - 1, 0))
    # a row deleted between the search and this look-up drops out here
    found = stored[order][at] == seqs if len(stored) else np.zeros(len(seqs), dtype=bool)
    looked_up = rows.take(pa.array(order[at[found]])).select(["id", *NEIGHBOR_COLUMNS])
    front = pa.table(
        {
            "query": query.filter(pa.array(found)),
            "rank": pa.array(np.asarray(rank, dtype=np.int32)[found]),
        }
    )
    return pa.Table.from_arrays(
        [
            front.column("query"),
            front.column("rank"),
            looked_up.column("id"),
            pa.array(np.asarray(distances, dtype=np.float32)[found]),
            *[looked_up.column(c) for c in NEIGHBOR_COLUMNS],
        ],
        names=["query", "rank", "id", "distance", *NEIGHBOR_COLUMNS],
    )
