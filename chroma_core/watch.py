"""What a watch of a space sees: its new scored inputs and its new triggers, after a
position.

A position is ``"<seq>:<trigger id>:<space_id>"``: the inputs stored under a seq above the
first, the triggers with an id above the second, of the space the third numbers (a
position without it, as watches gave before, is of the space there is). A position of a
space since deleted and made again under its name starts the watch over at the new space's
first input, and the answer says ``replaced``: the new space's rows and seqs are not the
old one's. Inputs come in the order they were stored, each
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

POSITION = re.compile(r"^(\d{1,19}):(\d{1,19})(?::(\d{1,19}))?$")
NOT_TRAINING = {"context": {"$ne": "training"}}


@dataclass(frozen=True)
class Position:
    seq: int
    trigger: int
    #: the space's ``space_id``; 0 when the position does not say
    space_id: int = 0

    def __str__(self) -> str:
        if not self.space_id:
            return f"{self.seq}:{self.trigger}"
        return f"{self.seq}:{self.trigger}:{self.space_id}"


def parse_position(text) -> Position:
    found = POSITION.match(text) if isinstance(text, str) else None
    if found is None:
        raise InvalidInput(
            f"after must be a position a watch returned, such as '1042:3:1', not {text!r:.60}"
        )
    return Position(int(found.group(1)), int(found.group(2)), int(found.group(3) or 0))


def now(store: FollowRows, space: str, space_id: int = 0) -> Position:
    """The position after everything stored so far in space ``space`` (number
    ``space_id``)."""
    assert isinstance(store, Store)
    triggers = store.list_triggers(space)
    last = max((t["id"] for t in triggers), default=0)
    return Position(store.last_seq(space), last, space_id)


def events_after(
    store: FollowRows,
    space: str,
    after: Position,
    min_priority: float | None,
    where: Filter | None,
    limit: int,
    space_id: int = 0,
) -> dict:
    """Up to ``limit`` events after ``after``: ``events`` (inputs first, in seq order, then
    triggers, each with the position to resume after it), ``position`` (after them all),
    ``waiting_for`` (the first input not yet scored, which holds the position, or None) and
    ``replaced`` (``after`` was of a space deleted since: the watch started over at the
    first input of space ``space_id``, the one there is now)."""
    assert isinstance(store, Store)
    replaced = bool(after.space_id and space_id and after.space_id != space_id)
    after = Position(0, 0, space_id) if replaced else Position(after.seq, after.trigger, space_id)
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
            position = str(Position(seq, after.trigger, space_id))
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
        position = str(Position(seq, trigger_id, space_id))
        events.append({"kind": "trigger", "position": position, "trigger": trigger})
    return {
        "events": events,
        "position": str(Position(seq, trigger_id, space_id)),
        "waiting_for": waiting_for,
        "replaced": replaced,
    }
