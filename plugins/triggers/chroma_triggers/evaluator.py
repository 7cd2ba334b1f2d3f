"""Evaluating trigger rules as data arrives: one thread per service.

Every ``rule_seconds`` the thread reads the rules of the spaces that hold some (found by a
sweep of every space each ``SWEEP_SECONDS``, and at once when a rule is made here) and
checks each (:mod:`chroma_triggers.rules` says when each kind fires). Scores written by
scoring on arrival, a computation or another server are seen at the next check.

What a rule has done is read from the store, never kept beside it: its triggers are those
whose ``selection["rule"]["id"]`` is the rule's id, the inputs they hold are the ones it
never takes again, and the newest of them is when it last fired. A trigger is stored in
one transaction, so a rule that fired before a crash has fired, and is not fired again
after the restart. (Two servers of one store each evaluate the rules; the store does not
serialise their checks, so run rules on one server of a cluster.)
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

from chroma_core.filters import parse
from chroma_core.store import SpaceSettings
from chroma_triggers.rules import MAX_RULES, PREFIX, Rule, make, stored
from chroma_wire.errors import ChromaError, InvalidInput, NotFound
from chroma_wire.types import SpaceInfo

log = logging.getLogger("chroma.triggers.rules")

#: how often every space is looked at for rules made by another server
SWEEP_SECONDS = 30.0
#: how soon a schedule or drift rule that found nothing to select tries again, at most
RETRY_SECONDS = 60.0

COLUMNS = pa.schema(
    [
        ("name", pa.string()),
        ("when", pa.string()),
        ("n", pa.int64()),
        ("min_priority", pa.float64()),
        ("dataset", pa.string()),
        ("where", pa.string()),
        ("strategy", pa.string()),
        ("every", pa.float64()),
        ("note", pa.string()),
        ("fired", pa.int64()),
        ("last_trigger", pa.int64()),
        ("last_fired_at", pa.string()),
        ("checked_at", pa.string()),
        ("last_error", pa.string()),
        ("created_at", pa.string()),
        ("id", pa.string()),
    ]
)


@dataclass
class _Record:
    """What a rule has done, read from its triggers in the store, and its last check."""

    taken: set[str] = field(default_factory=set)
    fired: int = 0
    last_trigger: int | None = None
    #: epoch seconds of the newest trigger
    last_fired: float | None = None
    checked: float | None = None
    error: str | None = None
    #: monotonic time before which the rule is not checked again
    not_before: float = 0.0


class Evaluator:
    def __init__(self, context, tick_seconds: float, drift_seconds: float):
        self._context = context
        self._tick = tick_seconds
        self._drift_seconds = drift_seconds
        self._records: dict[str, _Record] = {}
        #: spaces holding rules, by name
        self._spaces: set[str] = set()
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._thread: threading.Thread | None = None

    # --- what clients ask -----------------------------------------------------
    def add(self, space: SpaceInfo, params: dict) -> Rule:
        store = self._settings_store()
        rule = make(params)
        held = stored(store.space_settings(space.name))
        if rule.name in held:
            raise InvalidInput(
                f"space {space.name!r} already holds a trigger rule named {rule.name!r}; "
                "remove it first or choose another name"
            )
        if len(held) >= MAX_RULES:
            raise InvalidInput(f"space {space.name!r} holds {MAX_RULES} trigger rules, the most")
        store.set_space_setting(space.name, PREFIX + rule.name, rule.to_json())
        with self._lock:
            self._spaces.add(space.name)
            self._wake.notify_all()
        return rule

    def remove(self, space: SpaceInfo, name) -> Rule:
        store = self._settings_store()
        held = stored(store.space_settings(space.name))
        if not isinstance(name, str) or name not in held:
            known = ", ".join(sorted(held)) or "none"
            raise NotFound(
                f"space {space.name!r} has no trigger rule named {name!r:.80} (its rules: {known})"
            )
        store.set_space_setting(space.name, PREFIX + name, None)
        with self._lock:
            self._records.pop(held[name].id, None)
        return held[name]

    def listing(self, space: SpaceInfo) -> pa.Table:
        """Every rule of ``space`` with what it has done, by name."""
        store = self._settings_store()
        rows = []
        for name, rule in sorted(stored(store.space_settings(space.name)).items()):
            record = self._record(space.name, rule)
            rows.append(
                {
                    "name": name,
                    "when": rule.when,
                    "n": rule.n,
                    "min_priority": rule.min_priority,
                    "dataset": rule.dataset,
                    "where": None if rule.where is None else _json(rule.where),
                    "strategy": rule.strategy,
                    "every": rule.every,
                    "note": rule.note,
                    "fired": record.fired,
                    "last_trigger": record.last_trigger,
                    "last_fired_at": _iso(record.last_fired),
                    "checked_at": _iso(record.checked),
                    "last_error": record.error,
                    "created_at": rule.created_at,
                    "id": rule.id,
                }
            )
        return pa.Table.from_pylist(rows, schema=COLUMNS)

    def forget(self, space: str) -> None:
        with self._lock:
            self._spaces.discard(space)

    # --- the thread -------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._loop, name="chroma-trigger-rules", daemon=True
                )
                self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _loop(self) -> None:
        next_sweep = 0.0
        while True:
            with self._lock:
                if self._closed:
                    return
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + SWEEP_SECONDS
                self._guarded(self._sweep)
            with self._lock:
                spaces = sorted(self._spaces)
            for space in spaces:
                with self._lock:
                    if self._closed:
                        return
                self._guarded(lambda space=space: self._check_space(space))
            with self._lock:
                if not self._closed:
                    self._wake.wait(self._tick)

    def _guarded(self, work) -> None:
        try:
            work()
        except Exception:  # the thread outlives any one failure; the next tick tries again
            with self._lock:
                closing = self._closed
            if closing:  # the store may be closing under a check that was under way
                log.debug("trigger rules: a check was cut short by the service closing")
                return
            log.exception("trigger rules: evaluation failed")

    def _sweep(self) -> None:
        store = self._context.store
        if not isinstance(store, SpaceSettings):
            return
        found = set()
        for info in self._context.store.list_spaces():
            try:
                if any(key.startswith(PREFIX) for key in store.space_settings(info.name)):
                    found.add(info.name)
            except NotFound:  # dropped since it was listed
                continue
        with self._lock:
            self._spaces |= found

    def _check_space(self, name: str) -> None:
        store = self._context.store
        try:
            info = store.get_space(name, count=False)
            rules = stored(store.space_settings(name))
        except NotFound:
            self.forget(name)
            return
        if not rules:
            self.forget(name)
            return
        for rule in rules.values():
            with self._lock:
                if self._closed:
                    return
            self._check(info, rule)

    def _check(self, info: SpaceInfo, rule: Rule) -> None:
        record = self._record(info.name, rule)
        now = time.monotonic()
        if now < record.not_before:
            return
        wall = time.time()
        since = None if record.last_fired is None else wall - record.last_fired
        try:
            if rule.when == "priority":
                if since is not None and since < rule.every:
                    return
                due = self._enough_scored(info, rule, record)
            elif rule.when == "schedule":
                due = since is None or since >= rule.every
            else:
                if since is not None and since < rule.every:
                    return
                record.not_before = now + self._drift_seconds
                due = self._drifted(info, rule)
            record.checked = wall
            record.error = None
            if due:
                self._fire(info, rule, record)
        except ChromaError as exc:
            record.checked = wall
            record.error = exc.detail
            if rule.when != "priority":
                record.not_before = max(record.not_before, now + min(RETRY_SECONDS, rule.every))

    def _enough_scored(self, info: SpaceInfo, rule: Rule, record: _Record) -> bool:
        selection = rule.selection()
        scored = self._context.store.priorities(
            info.name,
            n=len(record.taken) + rule.n,
            where=parse(selection["where"]),
            min_priority=rule.min_priority,
        )
        ids = scored.column("id").to_pylist()
        return sum(1 for i in ids if i not in record.taken) >= rule.n

    def _drifted(self, info: SpaceInfo, rule: Rule) -> bool:
        result = self._context.run(info, "drift", {"where": {"dataset": rule.dataset}})
        for row in result.table.to_pylist():
            if row["dataset"] == rule.dataset and row["class"] is None and row["drifted"]:
                return True
        return False

    def _fire(self, info: SpaceInfo, rule: Rule, record: _Record) -> None:
        trigger = self._context.trigger_retraining(info, rule.selection(), frozenset(record.taken))
        items = self._context.store.trigger_items(trigger["id"])
        with self._lock:
            record.taken.update(items.column("id").to_pylist())
            record.fired += 1
            record.last_trigger = trigger["id"]
            record.last_fired = _epoch(trigger["created_at"]) or time.time()
        log.info(
            "trigger rule %r of space %r fired: trigger %s with %s inputs",
            rule.name,
            info.name,
            trigger["id"],
            trigger["count"],
        )

    # --- what a rule has done ---------------------------------------------------
    def _record(self, space: str, rule: Rule) -> _Record:
        with self._lock:
            if rule.id not in self._records:
                self._records[rule.id] = self._read_record(space, rule)
            return self._records[rule.id]

    def _read_record(self, space: str, rule: Rule) -> _Record:
        store = self._context.store
        record = _Record()
        for trigger in store.list_triggers(space):
            if (trigger.get("selection") or {}).get("rule", {}).get("id") != rule.id:
                continue
            record.fired += 1
            record.taken.update(store.trigger_items(trigger["id"]).column("id").to_pylist())
            if record.last_trigger is None or trigger["id"] > record.last_trigger:
                record.last_trigger = trigger["id"]
                record.last_fired = _epoch(trigger["created_at"])
        return record

    def _settings_store(self):
        store = self._context.store
        if not isinstance(store, SpaceSettings):
            raise InvalidInput(f"the {store.name} store cannot keep trigger rules")
        return store


def _epoch(stamp) -> float | None:
    try:
        parsed = datetime.fromisoformat(str(stamp))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _json(value) -> str:
    return json.dumps(value, sort_keys=True)
