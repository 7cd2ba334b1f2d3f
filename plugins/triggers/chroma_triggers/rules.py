"""Trigger rules: what a space holds to record retraining triggers by itself.

A rule is checked when it is made and kept as JSON in a space setting of its own
(``trigger_rule:<name>``, through :class:`~chroma_core.store.SpaceSettings`), so every
server of the store sees it, it outlives restarts, and two rules made at once never
overwrite each other. Three kinds, by ``when``:

- ``priority``: at least ``n`` scored inputs matching ``where`` have a priority of at least
  ``min_priority`` and are in no earlier trigger of this rule; the trigger takes ``n`` of
  them.
- ``drift``: the ``drift`` algorithm flags dataset ``dataset``; the trigger takes ``n``
  inputs of it. At most once every ``every`` seconds (default a day).
- ``schedule``: every ``every`` seconds, ``n`` inputs (``strategy="diverse"`` spreads them
  over the space).

Every kind selects as ``space.trigger_retraining`` does (``n``, ``min_priority``, ``where``,
``strategy``) and never takes an input an earlier trigger of the same rule holds.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from chroma_core import filters
from chroma_core.selection import STRATEGIES
from chroma_wire import checks
from chroma_wire.errors import InvalidInput

#: the space setting a rule is kept under is this prefix and its name
PREFIX = "trigger_rule:"
KINDS = ("priority", "drift", "schedule")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
#: at most this many rules a space
MAX_RULES = 100
#: the most inputs one trigger of a rule takes
MAX_N = 100_000
DAY = 86_400.0
#: the longest interval a rule may name: a year
MAX_EVERY = 366 * DAY


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    when: str
    n: int
    min_priority: float | None = None
    where: dict | None = None
    dataset: str | None = None
    strategy: str = "top_priority"
    #: seconds: the schedule's period; for the other kinds the least time between firings
    every: float = 0.0
    note: str | None = None
    created_at: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def selection(self) -> dict:
        """What ``context.trigger_retraining`` takes."""
        where = self.where
        if self.when == "drift":
            by_dataset = {"dataset": self.dataset}
            where = by_dataset if where is None else {"$and": [by_dataset, where]}
        return {
            "id": self.id,
            "name": self.name,
            "n": self.n,
            "min_priority": self.min_priority,
            "where": where,
            "strategy": self.strategy,
            "note": self.note if self.note is not None else f"trigger rule {self.name!r}",
        }


def make(params: dict) -> Rule:
    """A new rule from what a client sent, every field checked; ``InvalidInput`` naming the
    field otherwise."""
    params = dict(params)
    name = params.pop("name", None)
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidInput(
            f"a trigger rule needs a name of 1-64 letters, digits, '_', '.' or '-' "
            f"(got {name!r:.80})"
        )
    when = params.pop("when", None)
    if when not in KINDS:
        raise InvalidInput(f"unknown rule kind when={when!r:.40}; use one of {', '.join(KINDS)}")
    n = checks.required_int("n", params.pop("n", None), 1, MAX_N)
    min_priority = checks.optional_float("min_priority", params.pop("min_priority", None))
    where = params.pop("where", None)
    filters.parse(where)
    dataset = params.pop("dataset", None)
    strategy = params.pop("strategy", None) or "top_priority"
    every = params.pop("every", None)
    note = params.pop("note", None)
    checks.check_all_used("trigger rule", params)
    if strategy not in STRATEGIES:
        raise InvalidInput(f"unknown strategy {strategy!r:.40}; use one of {', '.join(STRATEGIES)}")
    if when == "priority" and min_priority is None:
        raise InvalidInput(
            "a priority rule needs min_priority: it fires when n inputs score at least that"
        )
    if when == "drift":
        if not isinstance(dataset, str) or not dataset:
            raise InvalidInput("a drift rule needs dataset: the dataset whose drift it watches")
    elif dataset is not None:
        raise InvalidInput(f"dataset is for drift rules; filter a {when} rule with where")
    if when == "schedule" and every is None:
        raise InvalidInput("a schedule rule needs every: the seconds between its triggers")
    if every is None:
        every = DAY if when == "drift" else 0.0
    every = checks.required_float("every", every, 0, MAX_EVERY)
    if when == "schedule" and every < 1:
        raise InvalidInput("every is at least 1 second for a schedule rule")
    if note is not None and (not isinstance(note, str) or len(note) > 10_000):
        raise InvalidInput("note must be a string of at most 10,000 characters")
    if min_priority is not None and not math.isfinite(min_priority):
        raise InvalidInput("min_priority must be a finite number")
    return Rule(
        id=uuid.uuid4().hex[:16],
        name=name,
        when=when,
        n=n,
        min_priority=min_priority,
        where=where,
        dataset=dataset,
        strategy=strategy,
        every=every,
        note=note,
        created_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
    )


def stored(settings: dict[str, str]) -> dict[str, Rule]:
    """The rules among a space's settings, by name; a value that does not read as a rule
    (written by a newer version, say) is left out."""
    found: dict[str, Rule] = {}
    for key, value in settings.items():
        if not key.startswith(PREFIX):
            continue
        try:
            rule = Rule(**json.loads(value))
        except (TypeError, ValueError):
            continue
        found[rule.name] = rule
    return found
