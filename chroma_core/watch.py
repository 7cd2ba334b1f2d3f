"""What a watch of a space sees: its new scored inputs and its new triggers, after a
position.

A position is ``"<seq>:<trigger id>"``: the inputs stored under a seq above the first, and
the triggers with an id above the second. Inputs come in the order they were stored, each
once it has a score: the position never passes an input still waiting for one, so a
consumer that resumes from the last position it was given misses nothing and sees nothing
twice (an input scored again later is not shown again). With scoring on arrival, inputs
are scored within moments of being stored; without, they show when a computation scores
them. Training rows are never shown; inputs below ``min_priority`` are passed over.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from chroma_core.filters import Filter
from chroma_core.store import FollowRows, Store
from chroma_wire.errors import InvalidInput

POSITION = re.compile(r"^(\d{1,19}):(\d{1,19})$")
NOT_TRAINING = {"context": {"$ne": "training"}}


@dataclass(frozen=True)
class Position:
    seq: int
    trigger: int

    def __str__(self) -> str:
        return f"{self.seq}:{self.trigger}"


def parse_position(text) -> Position:
    found = POSITION.match(text) if isinstance(text, str) else None
    if found is None:
        raise InvalidInput(
            f"after must be a position a watch returned, such as '1042:3', not {text!r:.60}"
        )
    return Position(int(found.group(1)), int(found.group(2)))


def now(store: FollowRows, space: str) -> Position:
    """The position after everything stored so far."""
    assert isinstance(store, Store)
    triggers = store.list_triggers(space)
    return Position(store.last_seq(space), max((t["id"] for t in triggers), default=0))


def events_after(
    store: FollowRows,
    space: str,
    after: Position,
    min_priority: float | None,
    where: Filter | None,
    limit: int,
) -> dict:
    """Up to ``limit`` events after ``after``: ``events`` (inputs first, in seq order, then
    triggers, each with the position to resume after it), ``position`` (after them all)
    and ``waiting_for`` (the first input not yet scored, which holds the position, or
    None)."""
    assert isinstance(store, Store)
    # read first: every row up to it is visible to the read that follows (a store makes a
    # space's rows visible in seq order), so when that read ends early the position can
    # pass the rows the filter left out
    last = store.last_seq(space)
    rows = store.scored_rows_after(space, after_seq=after.seq, limit=limit, where=where)
    events: list[dict] = []
    seq = after.seq
    waiting_for = None
    for row in rows.to_pylist():
        if row["priority"] is None:
            waiting_for = {"id": row["id"], "seq": row["seq"]}
            break
        seq = row["seq"]
        if min_priority is None or row["priority"] >= min_priority:
            position = str(Position(seq, after.trigger))
            events.append({"kind": "input", "position": position, **row})
    if waiting_for is None and rows.num_rows < limit:
        seq = max(seq, last)
    trigger_id = after.trigger
    newer = sorted(
        (t for t in store.list_triggers(space) if t["id"] > after.trigger),
        key=lambda t: t["id"],
    )
    for trigger in newer[: max(0, limit - len(events))]:
        trigger_id = trigger["id"]
        position = str(Position(seq, trigger_id))
        events.append({"kind": "trigger", "position": position, "trigger": trigger})
    return {
        "events": events,
        "position": str(Position(seq, trigger_id)),
        "waiting_for": waiting_for,
    }
