"""What commands print: a readable table or key-value lines, or JSON for scripts."""

from __future__ import annotations

import dataclasses
import json
import math

import click
import numpy as np
import pandas as pd

#: the widest a text cell is shown in a table (JSON keeps every character)
MAX_CELL = 48


def table(frame: pd.DataFrame, as_json: bool, empty: str = "(none)") -> None:
    """One row per line under a header, or a JSON array of objects."""
    if as_json:
        click.echo(json.dumps(records(frame), default=_plain))
        return
    if frame.empty:
        click.echo(empty)
        return
    shown = frame.copy()
    for name in shown.columns:
        shown[name] = [_cell(value) for value in shown[name]]
    click.echo(shown.to_string(index=False))


def record(value: dict, as_json: bool) -> None:
    """``key: value`` lines (a nested dict indented under its key), or one JSON object."""
    if as_json:
        click.echo(json.dumps(value, default=_plain))
        return
    for line in _lines(value, 0):
        click.echo(line)


def records(frame: pd.DataFrame) -> list[dict]:
    return [{str(k): _plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _lines(value: dict, depth: int):
    pad = "  " * depth
    for key, item in value.items():
        if isinstance(item, dict) and item:
            yield f"{pad}{key}:"
            yield from _lines(item, depth + 1)
        else:
            yield f"{pad}{key}: {_cell(item, limit=None)}"


def _cell(value, limit: int | None = MAX_CELL) -> str:
    value = _plain(value)
    if value is None:
        text = "-"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, dict | list):
        text = json.dumps(value, default=_plain) if value else "-"
    else:
        text = str(value)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def _plain(value):
    """``value`` as JSON knows it: numpy and pandas scalars unwrapped, NaN and NA as None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
