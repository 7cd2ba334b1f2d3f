"""Labels to and from labelling tools: read what a tool exports into (id, label) pairs, and
write a trigger's inputs as tasks a tool imports.

Read (:func:`read_labels`):

* a table, CSV (also ``.csv.gz``) or Parquet, with an id column and a label column (``id``
  and ``label`` unless named otherwise); an empty label is no label, and the row is skipped;
* Label Studio's JSON export (a list of tasks, each with its ``data`` and ``annotations``):
  the input's id is ``data["chroma_id"]`` (as :func:`label_studio_tasks` writes it), else the
  task's ``data`` value named by ``id_field``; the label is the first choice of the task's
  latest annotation that was not cancelled (classification with a ``choices`` control);
* CVAT's "CVAT for images 1.1" XML export (``annotations.xml``): each ``<image>`` with a
  ``<tag label="...">`` gives a label to the input whose id or ``input_uri`` is the image's
  ``name`` (the caller maps names to ids, as :meth:`Space.import_labels` does).

Write (:func:`label_studio_tasks`): one Label Studio task per input, with the input URI as
``data["image"]`` (``data_key``), ``chroma_id``, the priority, and the model's inference as
a prediction, so a labeller starts from what the model said.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pandas as pd

from chroma_client.errors import InvalidInput

FORMATS = ("csv", "parquet", "label-studio", "cvat")
#: what a task's data names our input id by
ID_FIELD = "chroma_id"


def detect_format(path: Path) -> str:
    """The format of a labels file from its name, and for ``.json``/``.xml`` its kind."""
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(".json"):
        return "label-studio"
    if name.endswith(".xml"):
        return "cvat"
    raise InvalidInput(
        f"cannot tell the format of {str(path)!r} from its name: give format= one of "
        f"{', '.join(FORMATS)}"
    )


def read_labels(
    source,
    *,
    format: str | None = None,  # noqa: A002 - the word users know
    id_column: str = "id",
    label_column: str = "label",
    id_field: str = ID_FIELD,
) -> tuple[pd.DataFrame, str]:
    """``(pairs, key)``: a DataFrame of ``key`` and ``label`` columns, one row per labelled
    input, from a file path or a DataFrame; ``key`` is ``"id"``, or ``"name"`` for CVAT
    (image names, to be matched to ids or input URIs). ``InvalidInput`` names what is
    wrong with the source."""
    if isinstance(source, pd.DataFrame):
        return _from_table(source, id_column, label_column, "the DataFrame"), "id"
    if not isinstance(source, str | os.PathLike):
        raise InvalidInput(
            f"labels come from a file path or a DataFrame, got {type(source).__name__}"
        )
    path = Path(source)
    if not path.is_file():
        raise InvalidInput(f"no labels file at {str(path)!r}")
    kind = format or detect_format(path)
    if kind not in FORMATS:
        raise InvalidInput(f"unknown labels format {kind!r}; use one of {', '.join(FORMATS)}")
    try:
        if kind == "csv":
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
            return _from_table(table, id_column, label_column, path.name), "id"
        if kind == "parquet":
            return _from_table(pd.read_parquet(path), id_column, label_column, path.name), "id"
        if kind == "label-studio":
            return _label_studio(path, id_field), "id"
        return _cvat(path), "name"
    except InvalidInput:
        raise
    except Exception as exc:  # a file that is not what its name says
        raise InvalidInput(f"cannot read {path.name} as {kind}: {exc}") from None


def _from_table(table: pd.DataFrame, id_column: str, label_column: str, what: str):
    for column, role in ((id_column, "id_column"), (label_column, "label_column")):
        if column not in table.columns:
            raise InvalidInput(
                f"{what} has no column {column!r} ({role}); its columns: "
                f"{', '.join(map(str, table.columns[:20]))}"
            )
    pairs = pd.DataFrame(
        {"id": table[id_column].astype("string"), "label": table[label_column].astype("string")}
    )
    pairs = pairs[pairs["id"].notna() & pairs["label"].notna() & (pairs["label"] != "")]
    return _one_each(pairs.reset_index(drop=True), "id", what)


def _label_studio(path: Path, id_field: str) -> pd.DataFrame:
    tasks = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(tasks, list):
        raise InvalidInput(f"{path.name} is not a Label Studio export: it holds no list of tasks")
    rows = []
    for number, task in enumerate(tasks):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise InvalidInput(f"{path.name}: task {number} has no data")
        data = task["data"]
        key = data.get(ID_FIELD, data.get(id_field))
        if key is None:
            raise InvalidInput(
                f"{path.name}: task {task.get('id', number)} names no input: its data has "
                f"neither {ID_FIELD!r} nor {id_field!r}"
            )
        label = _choice(task.get("annotations") or [])
        if label is not None:
            rows.append((str(key), label))
    pairs = pd.DataFrame(rows, columns=["id", "label"], dtype="string")
    return _one_each(pairs, "id", path.name)


def _choice(annotations: list) -> str | None:
    """The first choice of the latest annotation not cancelled, or None."""
    kept = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
    kept.sort(key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id", 0)))
    for annotation in reversed(kept):
        for result in annotation.get("result") or []:
            if not isinstance(result, dict):
                continue
            choices = (result.get("value") or {}).get("choices")
            if choices:
                return str(choices[0])
    return None


def _cvat(path: Path) -> pd.DataFrame:
    root = ElementTree.parse(path).getroot()
    if root.tag != "annotations":
        raise InvalidInput(f"{path.name} is not a CVAT for images export: no <annotations>")
    rows = []
    for image in root.iter("image"):
        tags = [tag.get("label") for tag in image.findall("tag") if tag.get("label")]
        if tags and image.get("name"):
            rows.append((image.get("name"), tags[0]))
    return _one_each(pd.DataFrame(rows, columns=["name", "label"], dtype="string"), "name",
                     path.name)  # fmt: skip


def _one_each(pairs: pd.DataFrame, key: str, what: str) -> pd.DataFrame:
    twice = pairs[key][pairs[key].duplicated()]
    if len(twice):
        clash = pairs[pairs[key] == twice.iloc[0]]["label"]
        if clash.nunique() > 1:
            raise InvalidInput(
                f"{what} gives {key} {twice.iloc[0]!r} two labels: "
                f"{', '.join(map(repr, clash.unique()[:3]))}"
            )
        pairs = pairs.drop_duplicates(key)
    return pairs.reset_index(drop=True)


def label_studio_tasks(items: pd.DataFrame, data_key: str = "image") -> list[dict]:
    """One Label Studio task per row of ``items`` (a trigger's items: id, input_uri,
    inference, priority, ...): the input URI under ``data_key``, the id as ``chroma_id``,
    the priority, and the inference as a prediction of a ``choices`` control named
    ``label`` on ``data_key``."""
    tasks = []
    for row in items.itertuples(index=False):
        data = {data_key: getattr(row, "input_uri", None), ID_FIELD: row.id}
        priority = getattr(row, "priority", None)
        if priority is not None and not pd.isna(priority):
            data["priority"] = float(priority)
        for field in ("dataset", "label"):
            value = getattr(row, field, None)
            if value is not None and not pd.isna(value):
                data[field] = value
        task: dict = {"data": data}
        inference = getattr(row, "inference", None)
        if inference is not None and not pd.isna(inference):
            task["predictions"] = [
                {
                    "model_version": "chroma",
                    "result": [{"from_name": "label", "to_name": data_key, "type": "choices",
                                "value": {"choices": [str(inference)]}}],
                }
            ]  # fmt: skip
        tasks.append(task)
    return tasks
