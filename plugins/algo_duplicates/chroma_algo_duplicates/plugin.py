"""The ``duplicates`` algorithm: near-duplicate rows, and triage rows leaked from training."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from chroma_algo_duplicates import joined
from chroma_algo_duplicates.found import (
    KINDS,
    TRAINING,
    Found,
    calibrated,
    catalogue_of,
    checked_rows,
    with_uri_pairs,
)
from chroma_algo_duplicates.pairs import (
    BY_EMBEDDING,
    BY_URI,
    CALIBRATION_ROWS,
    calibrate,
    embedding_pairs,
    neighbors,
    pair_distances,
    search_metric,
)
from chroma_core.algorithm import Algorithm
from chroma_core.filters import parse
from chroma_core.hookspecs import hookimpl
from chroma_core.schema import embeddings_of
from chroma_wire import checks
from chroma_wire.errors import InvalidInput
from chroma_wire.types import Result

if TYPE_CHECKING:
    from chroma_core.context import PluginContext
    from chroma_wire.types import SpaceInfo

DEFAULT_K = 5
MAX_K = 100
DEFAULT_RATIO = 0.1
COLUMNS = (
    "id_a",
    "id_b",
    "dataset_a",
    "dataset_b",
    "context_a",
    "context_b",
    "distance",
    "by",
    "kind",
    "label_a",
    "label_b",
)


class Duplicates(Algorithm, name="duplicates"):
    """Pairs of near-duplicate rows (close embeddings or the same input_uri) within a
    dataset, across datasets, and triage rows duplicated in training (leakage)."""

    def run(self, context: PluginContext, space: SpaceInfo, params: dict) -> Result:
        settings = _params(params)
        found = joined.pairs(context.store, space, settings)
        if found is None:
            found = _in_memory(context.store, space, settings)
        meta = found.meta
        if found.catalogue is None:
            return Result(_table(_empty_frame()), meta | {"counts": dict.fromkeys(KINDS, 0)})
        catalogue, pairs, distance = found.catalogue, found.pairs, found.distance
        by = found.by
        is_training = catalogue["context"] == TRAINING
        a, b = pairs[:, 0], pairs[:, 1]
        leak = is_training[a] != is_training[b]
        # A leaked pair names its training row first.
        swap = leak & is_training[b]
        a, b = np.where(swap, b, a), np.where(swap, a, b)
        same = pd.Series(catalogue["dataset"][a]).eq(pd.Series(catalogue["dataset"][b])).to_numpy()
        kind = np.where(leak, 0, np.where(same, 2, 1))
        meta["counts"] = {name: int((kind == i).sum()) for i, name in enumerate(KINDS)}

        keep = np.isin(kind, [KINDS.index(name) for name in settings["kinds"]])
        order = np.lexsort((b[keep], a[keep], distance[keep], kind[keep]))
        meta["pairs"] = int(keep.sum())
        order = order[: settings["n"]]
        a, b = a[keep][order], b[keep][order]
        frame = pd.DataFrame(
            {
                "id_a": catalogue["id"][a],
                "id_b": catalogue["id"][b],
                "dataset_a": catalogue["dataset"][a],
                "dataset_b": catalogue["dataset"][b],
                "context_a": catalogue["context"][a],
                "context_b": catalogue["context"][b],
                "distance": distance[keep][order],
                "by": _by_names(by[keep][order]),
                "kind": np.asarray(KINDS, dtype=object)[kind[keep][order]],
                "label_a": catalogue["label"][a],
                "label_b": catalogue["label"][b],
            }
        )
        meta["returned"] = len(frame)
        return Result(_table(frame), meta)


def _in_memory(store, space: SpaceInfo, settings: dict) -> Found:
    """Every row's vector read, and its neighbours searched here."""
    metric = search_metric(space.metric)
    table = store.get(space.name, include_embeddings=True)
    n = table.num_rows
    checked = checked_rows(store, space.name, settings["where"], table.column("seq").to_numpy())
    queries = np.flatnonzero(checked)
    meta: dict = {"metric": metric, "k": settings["k"], "rows": n, "rows_checked": len(queries)}
    if n == 0:
        return Found(meta)
    x = embeddings_of(table)
    catalogue = catalogue_of(table)
    del table
    training = np.flatnonzero(catalogue["context"] == TRAINING)
    if settings["threshold"] is not None:
        threshold = settings["threshold"]
        meta |= {"threshold": threshold, "threshold_from": "given"}
    else:
        reference = training if len(training) >= 2 else np.arange(n)
        threshold, median = calibrate(x, reference, settings["ratio"], metric)
        meta |= calibrated(metric, settings["ratio"], median, len(training) >= 2,
                           int(min(len(reference), CALIBRATION_ROWS)))  # fmt: skip
        meta["threshold"] = threshold
    found = neighbors(x, queries, settings["k"], metric)
    meta["method"] = found.method
    pairs, by = with_uri_pairs(embedding_pairs(found, queries, threshold), catalogue, checked, meta)
    distance = pair_distances(x, pairs[:, 0], pairs[:, 1], metric)
    return Found(meta, catalogue, pairs, by, distance)


def _by_names(by: np.ndarray) -> np.ndarray:
    names = np.empty(len(by), dtype=object)
    names[by == BY_EMBEDDING] = "embedding"
    names[by == BY_URI] = "input_uri"
    names[by == BY_EMBEDDING | BY_URI] = "both"
    return names


def _empty_frame() -> pd.DataFrame:
    frame = pd.DataFrame({name: pd.Series([], dtype=object) for name in COLUMNS})
    return frame.astype({"distance": np.float64})


def _table(frame: pd.DataFrame) -> pa.Table:
    schema = pa.schema(
        [(name, pa.float64() if name == "distance" else pa.string()) for name in COLUMNS]
    )
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)


def _params(params: dict) -> dict:
    threshold = params.pop("threshold", None)
    ratio = params.pop("ratio", None)
    k = params.pop("k", DEFAULT_K)
    where = params.pop("where", None)
    kinds = params.pop("kinds", None)
    n = params.pop("n", None)
    checks.check_all_used("duplicates", params)
    if threshold is not None and ratio is not None:
        raise InvalidInput(
            "pass threshold (a distance) or ratio (to calibrate one from the data), not both"
        )
    threshold = checks.optional_float("threshold", threshold, 0)
    ratio = checks.optional_float("ratio", ratio, above=0, maximum=1)
    k = checks.required_int("k", k, 1, MAX_K)
    # the most pairs to return; None for all
    n = checks.optional_int("n", n, 1)
    if kinds is None:
        kinds = list(KINDS)
    elif isinstance(kinds, str):
        kinds = [kinds]
    if not isinstance(kinds, list | tuple) or not kinds:
        raise InvalidInput(f"kinds must be a non-empty list of {', '.join(KINDS)}, got {kinds!r}")
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown:
        raise InvalidInput(
            f"unknown kind(s) {', '.join(map(repr, unknown))}; use {', '.join(KINDS)}"
        )
    return {
        "threshold": threshold,
        "ratio": DEFAULT_RATIO if ratio is None else ratio,
        "k": k,
        "where": parse(where),
        "kinds": list(kinds),
        "n": n,
    }


@hookimpl
def chroma_algorithms():
    return [Duplicates()]
