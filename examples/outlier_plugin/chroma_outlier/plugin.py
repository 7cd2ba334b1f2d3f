"""An example third-party algorithm: how far each input lies from its space's centroid.

Installed as its own package, found through the ``chroma`` entry point group, and run
from any client with ``space.run("centroid_outliers", top=20)``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from chroma_core.algorithm import Algorithm
from chroma_core.context import PluginContext
from chroma_core.filters import parse
from chroma_core.hookspecs import hookimpl
from chroma_wire import checks
from chroma_wire.types import Result, SpaceInfo


class CentroidOutliers(Algorithm, name="centroid_outliers"):
    """Inputs ranked by the z-score of their distance to the space's centroid."""

    def run(self, context: PluginContext, space: SpaceInfo, params: dict) -> Result:
        # the checks every built-in algorithm uses, so errors read the same
        top = checks.required_int("top", params.pop("top", 10), 1)
        where = parse(params.pop("where", None))
        checks.check_all_used(self.name, params)
        seqs, vectors = context.store.vectors(space.name, where=where)
        if vectors is None or len(seqs) == 0:
            empty = pa.table(
                {"id": pa.array([], pa.string()), "zscore": pa.array([], pa.float64())}
            )
            return Result(empty, {"rows": 0})
        distance = np.linalg.norm(vectors - vectors.mean(axis=0), axis=1)
        spread = distance.std() or 1.0
        zscore = (distance - distance.mean()) / spread
        order = np.argsort(-zscore, kind="stable")[:top]
        ids = context.store.rows_by_seq(space.name, seqs[order]).to_pandas().set_index("seq")["id"]
        table = pa.table({"id": ids.loc[seqs[order]].to_numpy(), "zscore": zscore[order]})
        return Result(table, {"rows": int(len(seqs))})


@hookimpl
def chroma_algorithms():
    return [CentroidOutliers()]
