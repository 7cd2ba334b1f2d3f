"""Priority through the store's own neighbour search, for spaces too big to read at once.

A store with :class:`chroma_core.store.NeighborJoin` (ClickHouse, once its inverted file is
trained) searches the neighbours where the rows are stored and hands them over a page at a
time. The scores are those of :func:`chroma_algo_priority.scores.priority_scores`, read in
three passes, none holding more than a page of vectors:

1. the labelled training rows, page by page: their seqs and labels, and the class sums and
   second moment the Mahalanobis model needs;
2. a sample of at most ``reference_rows`` of them, with their neighbours among the others:
   the reference distances of ``distance_pct`` and ``novelty``, and of ``mahalanobis_pct``
   (the in-memory path measures the latter against every training row);
3. every non-training row with its neighbours among the labelled training rows.

The linear probe of the in-memory path is not fitted here: its ``probe_support`` is left
empty and the neighbours alone back each inference (``vote_weight`` 1).

Neighbours come from the cells each row probes, not an exhaustive scan: a neighbour the
probes miss is replaced by the next nearest, as with the in-memory inverted lists.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from chroma_algo_priority.scores import (
    Mahalanobis,
    Moments,
    PriorityParams,
    class_evidence,
    encode_inferences,
    evidence,
    filled_distances,
)
from chroma_core.filters import Filter
from chroma_core.neighbor_search import Workers
from chroma_core.seqs import locate
from chroma_core.store import JoinedNeighbors, JoinQuery, NeighborJoin
from chroma_wire.errors import InvalidInput
from chroma_wire.types import SpaceInfo

log = logging.getLogger("chroma.priority")

#: rows of a page of the first pass
PAGE_ROWS = 100_000
# a neighbour whose label is unknown here (a row added since the first pass) never agrees
_ADDED_SINCE = -3


class Joined:
    """The scores of every non-training row, as :func:`priority_scores` gives them, with the
    ids, inferences' codes and outputs of those rows; built by :func:`score`."""

    def __init__(self, ids: list, outputs: pa.ChunkedArray, scores: dict, version_seqs):
        self.ids = ids
        self.outputs = outputs
        self.scores = scores
        self.version_seqs = version_seqs


def start(
    store, space: SpaceInfo, training: Filter | None, others: Filter | None, k: int
) -> JoinedNeighbors | None:
    """The join of every non-training row with the labelled training rows, or None when
    the store cannot search it (then the vectors are read and searched in memory)."""
    if not isinstance(store, NeighborJoin):
        return None
    query = JoinQuery(
        others, training, k, among_labelled=True, columns=("id", "inference", "output")
    )
    return store.join_neighbors(space, query)


def score(
    store,
    space: SpaceInfo,
    training: Filter | None,
    queries: JoinedNeighbors,
    params: PriorityParams,
    progress,
) -> Joined:
    """The three passes; ``progress(phase, **counts)`` hears how far each has come."""
    started = time.perf_counter()
    with Workers() as workers:
        seqs, codes, classes, moments = _training(store, space, training, workers, progress)
        if len(seqs) < 2:
            raise InvalidInput(
                f"space {space.name!r} has {len(seqs)} labelled training inputs; "
                "priority needs at least 2 (add them with context='training' and labels)"
            )
        log.info("priority of %s: %d labelled training rows read in %.1f s", space.name,
                 len(seqs), time.perf_counter() - started)  # fmt: skip
        model = Mahalanobis.of_moments(moments, params.shrinkage, workers)
        k = min(params.k, len(seqs) - 1)
        share = min(1.0, params.reference_rows / len(seqs))
        reference = store.join_neighbors(
            space,
            JoinQuery(training, training, k, share, rows_labelled=True, among_labelled=True),
        )
        distances, mahalanobis = [], []
        for page in reference.pages:
            page_codes = _codes(seqs, codes, page.seqs)
            mean = filled_distances(page.distances).mean(axis=1)
            # a row alone in the cells it probed says nothing of how far neighbours lie
            distances.append(mean[np.isfinite(mean)])
            mahalanobis.append(model.to_class(page.vectors, page_codes))
            progress("reference", rows=sum(map(len, mahalanobis)), of=reference.rows)
        log.info("priority of %s: reference of %d rows after %.1f s", space.name,
                 sum(map(len, mahalanobis)), time.perf_counter() - started)  # fmt: skip
        reference_mean = np.sort(np.concatenate(distances))
        reference_mahalanobis = np.sort(np.concatenate(mahalanobis))

        ids, outputs, parts = [], [], []
        done = 0
        for page in queries.pages:
            query_codes = encode_inferences(
                np.asarray(page.columns.column("inference").to_pylist(), dtype=object),
                classes,
                len(page.seqs),
            )
            neighbor_codes = _codes(seqs, codes, page.neighbors)
            found = filled_distances(page.distances[:, :k])
            part = evidence(neighbor_codes[:, :k], found, query_codes, reference_mean,
                            len(classes))  # fmt: skip
            part.update(class_evidence(
                model.to_class(page.vectors, query_codes), query_codes, reference_mahalanobis
            ))  # fmt: skip
            parts.append(part)
            ids.extend(page.columns.column("id").to_pylist())
            outputs.append(page.columns.column("output"))
            done += len(page.seqs)
            progress("scoring", rows=done, of=queries.rows)
    scores = {name: np.concatenate([p[name] for p in parts]) if parts else np.zeros(0)
              for name in (parts[0] if parts else {})}  # fmt: skip
    # the linear probe is fitted in memory: rows scored in the store are backed by their
    # neighbours alone
    scores["probe_support"] = np.full(len(ids), np.nan)
    scores["vote_weight"] = np.ones(len(ids))
    column = pa.chunked_array(outputs) if outputs else pa.chunked_array([], pa.null())
    return Joined(ids, column, scores, seqs)


def _training(store, space: SpaceInfo, training: Filter | None, workers: Workers, progress):
    """Seqs (ascending) and class codes of the labelled training rows, the classes (sorted)
    and their moments."""
    dim = space.dim or 0
    moments = Moments(dim)
    seqs: list[np.ndarray] = []
    codes: list[np.ndarray] = []
    classes: dict[str, int] = {}
    for page_seqs, vectors, labels in NeighborJoin.of(store).vector_pages(
        space.name, training, labelled=True, rows=PAGE_ROWS
    ):
        encoded = pc.dictionary_encode(labels.column("label")).combine_chunks()
        known = [classes.setdefault(label, len(classes)) for label in
                 encoded.dictionary.to_pylist()]  # fmt: skip
        page_codes = np.asarray(known, dtype=np.int64)[encoded.indices.to_numpy()]
        moments.add(vectors, page_codes, len(classes), workers)
        seqs.append(page_seqs)
        codes.append(page_codes)
        progress("reading", rows=sum(map(len, seqs)))
    names = np.array(list(classes), dtype=object)
    order = np.argsort(names, kind="stable")
    # codes follow the sorted classes, as the in-memory path numbers them
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    moments.reorder(order)
    all_codes = rank[np.concatenate(codes)] if codes else np.zeros(0, dtype=np.int64)
    all_seqs = np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.int64)
    return all_seqs, all_codes, names[order], moments


def _codes(seqs: np.ndarray, codes: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """The class codes of rows ``wanted`` (seqs, any shape), from ``seqs`` (ascending)."""
    at, found = locate(seqs, wanted)
    return np.where(found, codes[at], _ADDED_SINCE)
