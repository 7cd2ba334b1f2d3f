"""Scores as the store keeps them: one row per scored input, its components as JSON.

Shared by a full computation (``plugin.py``) and scoring on arrival (``online.py``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

#: the components stored beside each priority, in the order the results show them
COMPONENTS = (
    "support",
    "probe_support",
    "vote_weight",
    "novelty",
    "confidence",
    "disagreement",
    "distance",
    "distance_pct",
    "mahalanobis",
    "mahalanobis_pct",
    "margin",
    "entropy",
    "from_votes",
    "from_probe",
    "from_confidence",
    "from_novelty",
)


def scores_table(ids, priority, components: pd.DataFrame, computed_at: str) -> pa.Table:
    """The table ``replace_priorities`` and ``add_priorities`` take: ``id``, ``priority``,
    ``components`` (a JSON object a row, from ``components``) and ``computed_at``."""
    lines = components.to_json(orient="records", lines=True).splitlines() if len(ids) else []
    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "priority": pa.array(np.asarray(priority, dtype=np.float64)),
            "components": pa.array(lines, pa.string()),
            "computed_at": pa.array([computed_at] * len(ids), pa.string()),
        }
    )
