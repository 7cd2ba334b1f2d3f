"""The ``label_quality`` algorithm: labelled training rows ranked by how likely their label
is wrong."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from chroma_algo_label_quality import joined
from chroma_algo_label_quality.confident_learning import WEIGHTINGS, LabelIssues, label_issues
from chroma_core.algorithm import Algorithm
from chroma_core.filters import parse
from chroma_core.hookspecs import hookimpl
from chroma_core.schema import embeddings_of
from chroma_wire import checks
from chroma_wire.errors import InvalidInput
from chroma_wire.types import Result

TRAINING = {"context": "training"}
MAX_K = 1000


class LabelQuality(Algorithm, name="label_quality"):
    """Labelled training inputs ranked by how likely their label is wrong: confident
    learning on out-of-fold class probabilities, the votes of their k nearest training
    neighbours mixed with a linear probe's."""

    def run(self, context, space, params):
        settings = _params(params)
        where = TRAINING if settings["where"] is None else {"$and": [TRAINING, settings["where"]]}
        scope = "" if settings["where"] is None else " matching where"
        through_store = joined.label_issues(context.store, space, parse(where), settings)
        if through_store is not None:
            rows, found = through_store
            labels = rows.column("label")
        else:
            rows = context.store.get(space.name, where=parse(where), include_embeddings=True)
            rows = rows.filter(pc.is_valid(rows.column("label")))
            labels = rows.column("label")
        if rows.num_rows == 0:
            raise InvalidInput(
                f"space {space.name!r} has no labelled training inputs{scope}; label_quality "
                "needs inputs added with context='training' and labels"
            )
        n_classes = len(pc.unique(labels))
        if n_classes < 2:
            raise InvalidInput(
                f"the labelled training inputs{scope} of space {space.name!r} carry "
                f"{n_classes} class; label_quality needs at least 2"
            )
        if through_store is None:
            found = label_issues(
                embeddings_of(rows),
                labels.to_numpy(zero_copy_only=False).astype(object),
                metric=space.metric,
                k=settings["k"],
                weighting=settings["weighting"],
                exclude_duplicates=settings["exclude_duplicates"],
                probe=settings["probe"],
            )
        meta = {
            "rows": rows.num_rows,
            "issues": int(found.is_issue.sum()),
            "classes": len(found.classes),
            "k": found.k,
            "weighting": settings["weighting"],
            "exclude_duplicates": settings["exclude_duplicates"],
            "method": (
                "confident learning on out-of-fold p(class): k-NN votes mixed with a linear "
                "probe, issue_score = 1 - p(given)"
                if found.probe is not None
                else "confident learning on out-of-fold k-NN votes, issue_score = 1 - p(given)"
            ),
            "search": found.search,
            "vote_weight": found.vote_weight,
            "log_loss": found.log_loss,
            "probe": _probe_meta(found, settings, through_store is not None),
            "per_class": {
                str(label): {
                    "rows": int(found.counts[c]),
                    "threshold": float(found.thresholds[c]),
                    "issues": int((found.is_issue & (found.given == c)).sum()),
                }
                for c, label in enumerate(found.classes)
            },
        }
        return Result(_table(rows, found, settings), meta)


def _probe_meta(found: LabelIssues, settings: dict, joined: bool) -> dict | None:
    if found.probe is not None:
        probe = found.probe
        return {"model": "regularised linear discriminant", "folds": probe.folds,
                "shrinkage": probe.shrinkage, "temperature": probe.temperature}  # fmt: skip
    if settings["probe"] and joined:
        return {"skipped": "the probe is fitted in memory; a space joined in the store is "
                           "scored by its neighbour votes alone"}  # fmt: skip
    return None


def _params(params: dict) -> dict:
    k = params.pop("k", 10)
    weighting = params.pop("weighting", "distance")
    where = params.pop("where", None)
    n = params.pop("n", None)
    only_issues = params.pop("only_issues", False)
    exclude_duplicates = params.pop("exclude_duplicates", False)
    probe = params.pop("probe", True)
    checks.check_all_used("label_quality", params)
    k = checks.required_int("k", k, 1, MAX_K)
    weighting = checks.choice("weighting", weighting, WEIGHTINGS)
    where = checks.optional_where("where", where)
    parse(where)
    return {
        "k": k,
        "weighting": weighting,
        "where": where or None,
        # the most rows to return; None for every row
        "n": checks.optional_int("n", n, 1),
        "only_issues": checks.flag("only_issues", only_issues),
        "exclude_duplicates": checks.flag("exclude_duplicates", exclude_duplicates),
        "probe": checks.flag("probe", probe),
    }


def _table(rows: pa.Table, found: LabelIssues, settings: dict) -> pa.Table:
    ids = rows.column("id").combine_chunks()
    # highest issue_score first, ties by id
    order = np.lexsort((pc.rank(ids, sort_keys="ascending").to_numpy(), -found.issue_score))
    if settings["only_issues"]:
        order = order[found.is_issue[order]]
    if settings["n"] is not None:
        order = order[: settings["n"]]
    neighbors = found.neighbors[order]
    voted = neighbors >= 0
    neighbor_ids = ids.take(pa.array(neighbors[voted]))
    offsets = np.concatenate([[0], np.cumsum(voted.sum(axis=1))]).astype(np.int32)
    take = pa.array(order)
    return pa.table(
        {
            "id": ids.take(take),
            "dataset": rows.column("dataset").take(take),
            "label": rows.column("label").take(take),
            "suggested_label": pa.array(found.classes[found.suggested[order]], pa.string()),
            "label_quality": pa.array(found.label_quality[order]),
            "issue_score": pa.array(found.issue_score[order]),
            "is_issue": pa.array(found.is_issue[order]),
            "vote_quality": _column(found.vote_quality, order),
            "probe_quality": _column(found.probe_quality, order),
            "neighbors": pa.ListArray.from_arrays(pa.array(offsets), neighbor_ids),
        }
    )


def _column(values: np.ndarray | None, order: np.ndarray) -> pa.Array:
    if values is None:
        return pa.nulls(len(order), pa.float64())
    return pa.array(values[order], pa.float64())


@hookimpl
def chroma_algorithms():
    return [LabelQuality()]
