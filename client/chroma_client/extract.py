"""Take embeddings out of models and into a space.

``layer`` captures one layer of a PyTorch module with a forward hook while the user's own
loop runs the model; ``embed`` batches any callable that maps inputs to vectors (an sklearn
``transform``, a sentence encoder's ``encode``). PyTorch stays optional: it is imported only
by the code that needs it.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from chroma_client import convert
from chroma_client.errors import InvalidInput

#: the keyword arguments of :meth:`Space.add` that describe rows
ROW_FIELDS = frozenset(
    {"dataset", "context", "input_uris", "labels", "inferences", "outputs", "metadata", "ids"}
)

if TYPE_CHECKING:
    import torch
    from torch.utils.hooks import RemovableHandle

    from chroma_client.client import Space

__all__ = ["LayerCapture", "embed", "layer"]


def _torch():
    try:
        import torch
    except ImportError:
        raise ImportError(
            "chroma_client.extract.layer needs PyTorch, which is not installed: pip install torch"
        ) from None
    return torch


# --- a layer of a torch module ------------------------------------------------
class LayerCapture:
    """The forward hook on one layer and the rows it added: ``extract.layer(space, model,
    name, dataset=..., context="training", batch_rows=None)`` captures the output of
    ``model``'s submodule ``name`` while ``capture.run(x)`` runs the model, adding one row
    per input to ``space``. Use it as a context manager.

    ``batch_rows`` holds captured rows back until at least that many are waiting, so small
    batches reach a server in fewer requests; ``None`` adds every batch as it runs.
    """

    def __init__(
        self,
        space: Space,
        model: torch.nn.Module,
        name: str,
        *,
        dataset: str,
        context: str = "training",
        batch_rows: int | None = None,
    ):
        torch = _torch()
        if not isinstance(model, torch.nn.Module):
            raise InvalidInput(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(name, str):
            raise InvalidInput(f"layer name must be a string, got {type(name).__name__}")
        if batch_rows is not None and (
            isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1
        ):
            raise InvalidInput("batch_rows must be a positive integer or None")
        if dataset is None:
            raise InvalidInput("dataset is required: name the data set these inputs come from")
        self.space = space
        self.model = model
        self.name = name
        self.module = _submodule(model, name)
        self.dataset = dataset
        self.context = context
        self.batch_rows = batch_rows
        self.ids: list[str] = []
        self._pending: list[pa.Table] = []
        self._fired: list[Any] = []
        self._running = False
        self._handle: RemovableHandle | None = None

    @property
    def rows(self) -> int:
        """How many rows this capture has stored so far."""
        return len(self.ids)

    @property
    def pending(self) -> int:
        """Captured rows still held back by ``batch_rows``."""
        return sum(t.num_rows for t in self._pending)

    def __repr__(self) -> str:
        return f"LayerCapture({self.name!r}, space={self.space.name!r}, rows={self.rows})"

    def __enter__(self) -> LayerCapture:
        if self._handle is not None:
            raise InvalidInput(f"the capture of layer {self.name!r} is already open")
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if exc is None:
            self.flush()
        elif isinstance(exc, Exception) and self._pending:
            # The batches that ran before the failure are as valid as with batch_rows=None,
            # where they would already be stored; the user's own error stays the one raised.
            held = self.pending
            try:
                self.flush()
            except Exception as flush_error:
                exc.add_note(
                    f"{held} captured rows of layer {self.name!r} were not stored: "
                    f"{type(flush_error).__name__}: {flush_error}"
                )

    def _hook(self, module, args, output) -> None:
        if self._running:
            self._fired.append(_first_tensor(output, self.name))

    def run(
        self,
        x,
        *,
        input_uris=None,
        labels=None,
        inferences=None,
        metadata=None,
        ids=None,
        keep_outputs: bool = False,
    ):
        """Run ``model(x)`` without gradients in eval mode, store the layer's output for
        the batch and return the model's output, so it stands in for ``model(x)``.

        ``inferences`` default to the argmax of a 2-D (n, classes) model output;
        ``inferences=False`` stores none. ``keep_outputs`` stores the softmax of the
        model's output with each row. Per-row fields take one value per input or one
        value for all.
        """
        if self._handle is None:
            raise InvalidInput(
                f"the capture of layer {self.name!r} is not open: use it in a `with` block"
            )
        torch = _torch()
        modes = [(m, m.training) for m in self.model.modules()]
        self._fired = []
        self._running = True
        try:
            self.model.eval()
            with torch.no_grad():
                output = self.model(x)
        finally:
            self._running = False
            # Per submodule, because model.train(flag) would also flip layers the user
            # froze on purpose (a BatchNorm kept in eval while the rest trains).
            for module, training in modes:
                module.training = training
        fired, self._fired = self._fired, []
        if not fired:
            raise InvalidInput(
                f"layer {self.name!r} did not run in the model's forward pass, so there is "
                "nothing to capture: pick a layer the forward method calls"
            )
        if len(fired) > 1:
            raise InvalidInput(
                f"layer {self.name!r} ran {len(fired)} times in one forward pass, so its "
                "output is ambiguous: capture a module that runs once per batch"
            )
        embeddings = _flat(fired[0])
        n = embeddings.shape[0]
        if isinstance(output, torch.Tensor) and output.ndim >= 1 and output.shape[0] != n:
            raise InvalidInput(
                f"layer {self.name!r} produced {n} rows but the model's output has "
                f"{output.shape[0]}: the layer's first dimension must be the batch"
            )
        if inferences is None:
            inferences = _argmax(output)
        elif inferences is False:
            inferences = None
        outputs = _softmax(output, self.name) if keep_outputs else None
        given = {"input_uris": input_uris, "labels": labels, "metadata": metadata, "ids": ids}
        table = convert.check_rows(
            embeddings,
            dataset=self.dataset,
            context=self.context,
            inferences=inferences,
            outputs=outputs,
            **given,
        ).table()
        if self._pending and _has_outputs(self._pending[-1]) != _has_outputs(table):
            # A batch goes to Space.add whole, and outputs there are all rows or none.
            self.flush()
        self._pending.append(table)
        if self.batch_rows is None or self.pending >= self.batch_rows:
            self.flush()
        return output

    def flush(self) -> list[str]:
        """Store the rows held back by ``batch_rows`` now; returns their ids."""
        if not self._pending:
            return []
        table = pa.concat_tables(self._pending)
        self._pending = []
        added = _add_table(self.space, table)
        self.ids.extend(added)
        return added


def _submodule(model, name: str):
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(name, names, n=3)
        shown = ", ".join(repr(n) for n in names[:20])
        more = f" and {len(names) - 20} more" if len(names) > 20 else ""
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise InvalidInput(
            f"model has no layer {name!r}{hint}; its layers are {shown or '(none)'}{more}"
        ) from None


def _first_tensor(output, name: str):
    torch = _torch()
    if isinstance(output, torch.Tensor):
        return output.detach()
    if isinstance(output, tuple | list):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item.detach()
    raise InvalidInput(
        f"layer {name!r} returned {type(output).__name__}, which holds no tensor to capture"
    )


def _flat(tensor) -> np.ndarray:
    if tensor.ndim == 0:
        raise InvalidInput("the layer returned a scalar; a layer output needs a batch dimension")
    return tensor.float().cpu().reshape(tensor.shape[0], -1).numpy()


def _argmax(output):
    torch = _torch()
    if isinstance(output, torch.Tensor) and output.ndim == 2:
        return output.argmax(dim=1).cpu().numpy()
    return None


def _softmax(output, name: str) -> np.ndarray:
    torch = _torch()
    if not isinstance(output, torch.Tensor) or output.ndim != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise InvalidInput(
            f"keep_outputs needs the model to return (n, classes) logits, got {shape}; "
            f"pass keep_outputs=False to capture layer {name!r} alone"
        )
    return torch.softmax(output.detach().float(), dim=1).cpu().numpy()


def _has_outputs(table: pa.Table) -> bool:
    return table.column("output").null_count < table.num_rows


def _add_table(space: Space, table: pa.Table) -> list[str]:
    """Send rows already checked by ``convert.check_rows`` through the public ``Space.add``."""
    column = table.column("metadata")
    metadata = None
    if column.null_count < len(column):
        metadata = [None if m is None else json.loads(m) for m in column.to_pylist()]
    return space.add(
        table.column("embedding"),
        dataset=table.column("dataset"),
        context=table.column("context"),
        input_uris=table.column("input_uri"),
        inferences=table.column("inference"),
        labels=table.column("label"),
        outputs=table.column("output") if _has_outputs(table) else None,
        metadata=metadata,
        ids=table.column("id"),
    )


# --- any callable -------------------------------------------------------------
def embed(
    space: Space, fn: Callable[[Any], Any], inputs, *, batch_size: int = 256, **fields
) -> list[str]:
    """Call ``fn`` on ``inputs`` ``batch_size`` at a time and add each batch it returns to
    ``space``; returns the ids of all rows, in input order.

    ``fn`` gets a slice of ``inputs`` (list, numpy array, tensor, DataFrame) and returns one
    row per input: a numpy array, tensor, list or sparse matrix; extra dimensions are
    flattened. ``fields`` are the keyword arguments of :meth:`Space.add` (``dataset``, which
    is required, ``context``, ``input_uris``, ``labels``, ``inferences``, ``outputs``,
    ``metadata``, ``ids``): per-row ones take one value per input or one value for all, and
    are sliced with the inputs. A batch is stored all or nothing; batches before a failing
    one stay.
    """
    if not callable(fn):
        raise InvalidInput(f"fn must be callable, got {type(fn).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInput("batch_size must be a positive integer")
    unknown = sorted(set(fields) - ROW_FIELDS)
    if unknown:
        raise InvalidInput(
            f"embed takes no argument {', '.join(unknown)}; the fields of a row are "
            f"{', '.join(sorted(ROW_FIELDS))}"
        )
    if fields.get("dataset") is None:
        raise InvalidInput("dataset is required: name the data set these inputs come from")
    if (
        isinstance(inputs, str | bytes | Mapping)
        or not hasattr(inputs, "__len__")
        or not hasattr(inputs, "__getitem__")
    ):
        raise InvalidInput(
            "inputs must be a list, array, tensor or DataFrame that can be sliced, "
            f"got {type(inputs).__name__}"
        )
    n = len(inputs)
    if n == 0:
        raise InvalidInput("inputs are empty: pass at least one")
    # Checked whole first, so a wrong length stores nothing rather than a few batches.
    for field, values in fields.items():
        if _per_row(values) and len(values) != n:
            raise InvalidInput(f"{field} has {len(values)} values for {n} inputs")
    out: list[str] = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        batch = _slice(inputs, start, stop)
        embeddings = _batch_matrix(fn(batch), stop - start, start)
        out.extend(
            space.add(
                embeddings,
                **{
                    field: _slice(values, start, stop) if _per_row(values) else values
                    for field, values in fields.items()
                },
            )
        )
    return out


def _per_row(values) -> bool:
    if values is None or isinstance(values, str | bytes | Mapping | np.generic):
        return False
    if getattr(values, "ndim", 1) == 0:
        return False
    return hasattr(values, "__len__")


def _slice(values, start: int, stop: int):
    if isinstance(values, pd.DataFrame | pd.Series):
        return values.iloc[start:stop]
    if isinstance(values, pa.Table | pa.RecordBatch | pa.Array | pa.ChunkedArray):
        return values.slice(start, stop - start)
    return values[start:stop]


def _batch_matrix(result, rows: int, start: int) -> np.ndarray:
    if hasattr(result, "detach") and hasattr(result, "cpu"):
        result = result.detach().cpu().float().numpy()
    elif hasattr(result, "toarray"):  # scipy sparse, as from TfidfVectorizer.transform
        result = result.toarray()
    try:
        matrix = np.asarray(result)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(
            f"fn returned {type(result).__name__} for inputs {start}..{start + rows - 1}, "
            f"which is not an array of numbers: {exc}"
        ) from None
    if matrix.ndim < 2:
        raise InvalidInput(
            f"fn must return one row per input, shape ({rows}, d); it returned shape "
            f"{matrix.shape} for inputs {start}..{start + rows - 1}"
        )
    if matrix.shape[0] != rows:
        raise InvalidInput(
            f"fn returned {matrix.shape[0]} rows for {rows} inputs "
            f"({start}..{start + rows - 1}); it must return one row per input"
        )
    return matrix.reshape(rows, -1)


#: capture a layer's output: ``with extract.layer(space, model, "avgpool", dataset=...)``
layer = LayerCapture
