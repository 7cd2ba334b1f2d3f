"""The ``priority`` algorithm: score every non-training input and store the scores."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from chroma_algo_priority import joined
from chroma_algo_priority.online import Online
from chroma_algo_priority.outputs import uncertainty
from chroma_algo_priority.scores import (
    PriorityParams,
    backing_inputs,
    combine,
    contributions,
    priority_scores,
    training_version,
)
from chroma_algo_priority.stored import COMPONENTS, scores_table
from chroma_core.algorithm import Algorithm
from chroma_core.config import Setting
from chroma_core.context import PluginContext
from chroma_core.filters import parse
from chroma_core.hookspecs import hookimpl
from chroma_core.schema import embeddings_of
from chroma_wire import checks
from chroma_wire.errors import Conflict, InvalidInput, NotFound
from chroma_wire.types import Result, SpaceInfo

log = logging.getLogger("chroma.priority")

STATE = "algo_priority"
ONLINE_STATE = "algo_priority.online"
#: quiet seconds after labelled training rows arrive before stale scores are recomputed in
#: the background (0 turns it off)
REFRESH_SECONDS = 30.0
SETTINGS = [
    Setting(
        "priority_refresh_seconds",
        float,
        REFRESH_SECONDS,
        "quiet seconds after new labelled training rows before stale priorities are "
        "recomputed in the background; 0 turns it off",
        minimum=0,
    ),
]
TRAINING = {"context": "training"}
NOT_TRAINING = {"context": {"$ne": "training"}}


class Priority(Algorithm, name="priority"):
    """Retraining priority of every non-training input: how weakly its training neighbours
    and, where outputs are sent, the model's confidence back its inference, or how far it
    lies outside the training data; with the distance, Mahalanobis, margin and entropy
    components behind it."""

    def run(self, context, space, params):
        only_new = checks.flag("only_new", params.pop("only_new", False))
        background = checks.flag("background", params.pop("background", False))
        settings = _params(params)
        _jobs(context).settings[_key(space)] = settings
        if not background:
            return self.compute(context, space, settings, only_new, _no_progress)
        job = _jobs(context).start(
            _key(space),
            lambda progress: self.compute(context, space, settings, only_new, progress),
        )
        return Result(pa.table({"id": pa.array([], pa.string())}), {"job": job})

    def compute(
        self,
        context: PluginContext,
        space: SpaceInfo,
        settings: PriorityParams,
        only_new: bool,
        progress,
    ) -> Result:
        """Score, store and return the scores; ``progress(phase, **counts)`` hears how far.

        Through the store's own neighbour search when it has one for the space
        (:mod:`chroma_algo_priority.joined`), else from the vectors read into memory."""
        started = time.perf_counter()
        progress("reading")
        search = joined.start(
            context.store, space, parse(TRAINING), parse(NOT_TRAINING), settings.k
        )
        if search is not None:
            found = joined.score(context.store, space, parse(TRAINING), search, settings, progress)
            labelled = np.ones(len(found.version_seqs), dtype=bool)
            scored = _Scored(
                found.ids, found.scores, found.outputs,
                training_version(found.version_seqs, labelled), len(found.version_seqs),
                search.meta,
            )  # fmt: skip
        else:
            scored = self._in_memory(context.store, space, settings, only_new, progress, started)
        result = self._store(context, space, settings, only_new, scored, started, progress)
        online: Online | None = context.existing_state(ONLINE_STATE)
        if online is not None:
            online.full_computation_done(space.name)
        return result

    def _in_memory(self, store, space, settings, only_new, progress, started) -> _Scored:
        """The scores from every training vector and every other read into memory (the rows
        already scored against the same training set left out with ``only_new``)."""
        training = store.get(space.name, where=parse(TRAINING), include_embeddings=True)
        labels = training.column("label").to_numpy(zero_copy_only=False)
        labelled = training.column("label").is_valid().to_numpy(zero_copy_only=False)
        if labelled.sum() < 2:
            raise InvalidInput(
                f"space {space.name!r} has {int(labelled.sum())} labelled training inputs; "
                "priority needs at least 2 (add them with context='training' and labels)"
            )
        version = training_version(training.column("seq"), labelled)
        queries = store.get(space.name, where=parse(NOT_TRAINING), include_embeddings=True)
        if only_new:
            kept, stale = _stored_scores(store, space.name, version)
            if not stale:
                queries = queries.filter(
                    pc.invert(pc.is_in(queries.column("id"), kept.column("id")))
                )
        progress("scoring", rows=queries.num_rows, training=int(labelled.sum()))
        log.info(
            "priority of %s: read %d training and %d other rows after %.1f s",
            space.name,
            training.num_rows,
            queries.num_rows,
            time.perf_counter() - started,
        )
        if queries.num_rows == 0:
            return _Scored([], {}, queries.column("output"), version, int(labelled.sum()), {})
        train_x = embeddings_of(training)
        if not labelled.all():
            train_x, labels = train_x[labelled], labels[labelled]
        del training  # its catalogue columns are not needed while scoring
        scores = priority_scores(
            train_x,
            labels.astype(object, copy=False),
            embeddings_of(queries),
            queries.column("inference").to_numpy(zero_copy_only=False).astype(object),
            metric=space.metric,
            params=settings,
        )
        return _Scored(
            queries.column("id").to_pylist(), scores, queries.column("output"), version,
            int(labelled.sum()), {"method": "in_memory"},
        )  # fmt: skip

    def _store(self, context, space, settings, only_new, scored: _Scored, started, progress):
        """Fold the model's confidence in, store the scores (keeping, with ``only_new``,
        those computed against the same training set) and return them."""
        store = context.store
        version = scored.version
        log.info(
            "priority of %s: scored %d rows after %.1f s",
            space.name,
            len(scored.ids),
            time.perf_counter() - started,
        )
        computed_at = datetime.now(UTC).isoformat(timespec="seconds")
        kept, stale = None, 0
        ids, scores, outputs = scored.ids, scored.scores, scored.outputs
        if only_new:
            kept, stale = _stored_scores(store, space.name, version)
            if stale:
                # the training set changed since some scores were computed: all are redone
                kept = None
            else:
                new = ~np.isin(
                    np.asarray(ids, dtype=object), kept.column("id").to_numpy(zero_copy_only=False)
                )
                ids = [i for i, keep in zip(ids, new, strict=True) if keep]
                scores = {
                    name: values[new] for name, values in scores.items() if name != "neighbors"
                }
                outputs = outputs.filter(pa.array(new))
        summary = {"training_version": version, "only_new": only_new, "stale": stale,
                   "search": scored.search}  # fmt: skip
        if kept is not None:
            summary["kept"] = kept.num_rows
        if not ids:
            if kept is None:
                empty = scores_table([], [], pd.DataFrame(), computed_at)
                store.replace_priorities(space.name, empty, space_id=space.space_id or None)
            return Result(_result_table([], [], pd.DataFrame()), {"scored": 0, **summary})
        confidence, scores["margin"], scores["entropy"] = uncertainty(outputs)
        scores["confidence"] = confidence
        with_outputs = ~np.isnan(confidence)
        scores["priority"] = combine(backing_inputs(scores), scores["novelty"], confidence)
        scores.update(contributions(scores))
        progress("storing")
        components = pd.DataFrame({name: scores[name] for name in COMPONENTS})
        stored = scores_table(
            ids, scores["priority"], components.assign(training_version=version), computed_at
        )
        if kept is not None:
            # scores of earlier rows are kept as they are: same training set, same answer
            stored = pa.concat_tables([kept, stored])
        # stored only if the space is still the one these scores were computed from
        store.replace_priorities(space.name, stored, space_id=space.space_id or None)
        seconds = time.perf_counter() - started
        log.info("priority of %s: stored %d scores after %.1f s", space.name, len(ids), seconds)
        context.metrics.histogram(
            "chroma_priority_compute_seconds",
            "Time to read, score and store the priorities of a space, by space.",
            ("space",),
        ).observe(seconds, space=space.name)
        probe_used = bool(len(ids)) and not np.isnan(scores["probe_support"]).all()
        meta = {
            "scored": len(ids),
            "training": scored.training,
            "vote_weight": float(scores["vote_weight"][0]) if probe_used else 1.0,
            "probe": "linear probe fitted on the labelled training rows"
            if probe_used
            else "not fitted: rows scored in the store are backed by their neighbours alone",
            "k": settings.k,
            "shrinkage": settings.shrinkage,
            "computed_at": computed_at,
            "with_outputs": int(with_outputs.sum()),
            **summary,
        }
        return Result(_result_table(ids, scores["priority"], components), meta)


@dataclass(frozen=True)
class _Scored:
    """Scores before the model's confidence is folded in: the rows' ids, the components of
    :func:`priority_scores`, the rows' outputs, the training set's version and size, and
    how the neighbours were searched."""

    ids: list
    scores: dict
    outputs: pa.ChunkedArray
    version: str
    training: int
    search: dict


def _not_in(ids, kept: pa.Table) -> pa.Array:
    """Whether each of ``ids`` is missing from the scores ``kept``."""
    return pc.invert(pc.is_in(ids, kept.column("id")))


def _no_progress(phase: str, **counts) -> None:
    pass


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _key(space: SpaceInfo) -> tuple[str, int]:
    """What a space's jobs are kept under: its name and its ``space_id``, so a space made
    again under a deleted one's name never sees (nor is written to by) the old one's jobs."""
    return (space.name, space.space_id)


class Jobs:
    """Priority computations running in the background, one at a time per space, and how
    far each has got (shown by ``priority_status``); kept by :func:`_key`."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_space: dict[tuple[str, int], dict] = {}
        self.threads: dict[tuple[str, int], threading.Thread] = {}
        self.timers: dict[tuple[str, int], threading.Timer] = {}
        self.settings: dict[tuple[str, int], PriorityParams] = {}
        self.closed = False

    def forget(self, space: tuple[str, int]) -> None:
        """Drop what is kept of a deleted space (a computation under way ends by finding it
        gone: it stores nothing)."""
        with self.lock:
            timer = self.timers.pop(space, None)
            if timer is not None:
                timer.cancel()
            self.by_space.pop(space, None)
            self.settings.pop(space, None)

    def refresh_later(self, space: tuple[str, int], delay: float, start) -> None:
        """Call ``start()`` once ``delay`` seconds pass without another call for ``space``
        (a bulk load of many batches sets off one refresh, after its last batch)."""
        with self.lock:
            if self.closed:
                return
            timer = self.timers.pop(space, None)
            if timer is not None:
                timer.cancel()
            timer = threading.Timer(delay, self._fire, args=(space, delay, start))
            timer.daemon = True
            self.timers[space] = timer
            timer.start()

    def _fire(self, space: tuple[str, int], delay: float, start) -> None:
        with self.lock:
            self.timers.pop(space, None)
            running = (self.by_space.get(space) or {}).get("state") == "running"
        if running:  # the running one may have read the old training set: go again after it
            self.refresh_later(space, delay, start)
            return
        try:
            start()
        except (NotFound, Conflict) as exc:  # deleted meanwhile, or a start that lost a race
            log.info("refreshing the priorities of %s did not start: %s", space[0], exc.detail)
        except Exception:
            log.exception("refreshing the priorities of %s did not start", space[0])

    def start(self, space: tuple[str, int], work) -> dict:
        with self.lock:
            current = self.by_space.get(space)
            if current is not None and current["state"] == "running":
                raise Conflict(f"a priority computation of space {space[0]!r} is already running")
            number = 1 if current is None else current["number"] + 1
            job = {"number": number, "state": "running", "phase": "starting", "started_at": _now()}
            self.by_space[space] = job
            thread = threading.Thread(
                target=self._run, args=(space, job, work), name=f"chroma-priority-{space[0]}"
            )
            thread.daemon = True
            self.threads[space] = thread
            thread.start()
            return dict(job)

    def _run(self, space: tuple[str, int], job: dict, work) -> None:
        def progress(phase: str, **counts) -> None:
            with self.lock:
                job.update(phase=phase, **counts)

        try:
            result = work(progress)
            outcome = {"state": "done", "phase": "done", "summary": result.meta}
        except Exception as exc:  # the job reports it; nobody waits on this thread
            log.exception("priority computation of %s failed", space[0])
            outcome = {"state": "failed", "error": getattr(exc, "detail", None) or str(exc)}
        with self.lock:
            job.update(finished_at=_now(), **outcome)

    def status(self, space: tuple[str, int]) -> dict | None:
        with self.lock:
            job = self.by_space.get(space)
            return None if job is None else dict(job)

    def join(self, timeout: float) -> None:
        with self.lock:
            self.closed = True
            for timer in self.timers.values():
                timer.cancel()
        for thread in list(self.threads.values()):
            thread.join(timeout)


def _jobs(context: PluginContext) -> Jobs:
    return context.state(STATE, Jobs)


def _online(context: PluginContext) -> Online:
    return context.state(
        ONLINE_STATE,
        lambda: Online(context, context.plugin_settings["priority_refresh_seconds"]),
    )


def _training_version(store, space: str) -> str:
    """The :func:`training_version` of the space's labelled training rows as stored now."""
    training = store.get(space, where=parse(TRAINING))
    labelled = training.column("label").is_valid().to_numpy(zero_copy_only=False)
    return training_version(training.column("seq"), labelled)


def _stored_scores(store, space: str, version: str) -> tuple[pa.Table, int]:
    """The stored scores as ``replace_priorities`` takes them, and how many were computed
    against another training set than ``version``."""
    scores = store.priorities(space, n=None).select(["id", "priority", "components", "computed_at"])
    versions = [
        json.loads(text).get("training_version") if text else None
        for text in scores.column("components").to_pylist()
    ]
    return scores, sum(v != version for v in versions)


class PriorityOnline(Algorithm, name="priority_online"):
    """Turn scoring on arrival on (``enabled=True``, with ``k`` and ``shrinkage`` as for
    ``priority``) or off for a space: every non-training row stored afterwards gets its
    priority as it lands, and rows without one are caught up; returns the state as
    ``priority_status()["online"]`` shows it."""

    def run(self, context, space, params):
        enabled = checks.flag("enabled", params.pop("enabled", True))
        settings = _params(params)
        online = _online(context)
        if enabled:
            online.enable(space, settings)
        else:
            online.disable(space)
        return Result(pa.table({"id": pa.array([], pa.string())}), {"online": online.status(space)})


class PriorityStatus(Algorithm, name="priority_status"):
    """Whether stored priorities are current: rows scored, rows not yet scored, and scores
    computed against a training set that has changed since."""

    def run(self, context, space, params):
        checks.check_all_used(self.name, params)
        store = context.store
        training = store.get(space.name, where=parse(TRAINING))
        labelled = training.column("label").is_valid().to_numpy(zero_copy_only=False)
        version = training_version(training.column("seq"), labelled)
        scores, stale = _stored_scores(store, space.name, version)
        others = store.count(space.name, parse(NOT_TRAINING))
        meta = {
            "training_version": version,
            "labelled_training": int(labelled.sum()),
            "scored": scores.num_rows,
            "unscored": others - scores.num_rows,
            "stale": stale,
            "job": _jobs(context).status(_key(space)),
            "online": _online(context).status(space),
        }
        return Result(pa.table({"id": pa.array([], pa.string())}), meta)


def _params(params: dict) -> PriorityParams:
    k = params.pop("k", 10)
    shrinkage = params.pop("shrinkage", 0.1)
    checks.check_all_used("priority", params)
    return PriorityParams(
        k=checks.required_int("k", k, 1, 1000),
        shrinkage=checks.required_float("shrinkage", shrinkage, 0, 1),
    )


def _result_table(ids, priority, components: pd.DataFrame) -> pa.Table:
    frame = pd.DataFrame({"id": ids, "priority": np.asarray(priority, dtype=np.float64)})
    for name in COMPONENTS:
        frame[name] = components[name].to_numpy() if len(ids) else np.array([], np.float64)
    frame = frame.sort_values(["priority", "id"], ascending=[False, True], kind="stable")
    return pa.Table.from_pandas(frame, preserve_index=False)


@hookimpl
def chroma_algorithms():
    return [Priority(), PriorityStatus(), PriorityOnline()]


@hookimpl
def chroma_settings():
    return SETTINGS


@hookimpl
def chroma_rows_added(context, space, seqs, rows):
    _online(context).rows_added(space, seqs, rows)
    if _labelled_training(rows):
        _refresh_later(context, space)


@hookimpl
def chroma_rows_deleted(context, space, seqs):
    # the rows are gone, and whether they were labelled training rows with them: the
    # refresh looks, once the deletes have been quiet a while, whether the scores went
    # stale (a row moved out of training by an update is deleted and added again)
    _refresh_later(context, space)


def _refresh_later(context: PluginContext, space: SpaceInfo) -> None:
    """Recompute the space's stored scores in the background once its training rows have
    been quiet for ``priority_refresh_seconds``, if they went stale meanwhile."""
    delay = context.plugin_settings["priority_refresh_seconds"]
    if delay <= 0:
        return

    def start() -> None:
        store = context.store
        # only scores that exist go stale: a space never scored waits for its first run
        if store.priorities(space.name, n=1).num_rows == 0:
            return
        # rows restored from an export keep their seqs, so the scores restored with them
        # are current, and stay as they were
        if _stored_scores(store, space.name, _training_version(store, space.name))[1] == 0:
            return
        jobs = _jobs(context)
        # with the parameters of the last run this service made, else the defaults
        settings = jobs.settings.get(_key(space), PriorityParams())
        jobs.start(
            _key(space),
            lambda progress: Priority().compute(context, space, settings, False, progress),
        )

    _jobs(context).refresh_later(_key(space), delay, start)


def _labelled_training(rows: pa.Table) -> bool:
    training = pc.equal(rows.column("context"), "training")
    labelled = pc.is_valid(rows.column("label")) if "label" in rows.column_names else None
    mask = training if labelled is None else pc.and_(training, labelled)
    return bool(pc.any(mask).as_py())


@hookimpl
def chroma_space_deleted(context, space):
    online: Online | None = context.existing_state(ONLINE_STATE)
    if online is not None:
        online.forget(space)
    jobs: Jobs | None = context.existing_state(STATE)
    if jobs is not None:
        jobs.forget(_key(space))


@hookimpl
def chroma_shutdown(context):
    online: Online | None = context.existing_state(ONLINE_STATE)
    if online is not None:
        online.close()
    # a computation under way finishes (and stores its scores) before the store closes
    jobs: Jobs | None = context.existing_state(STATE)
    if jobs is not None:
        jobs.join(timeout=300)
