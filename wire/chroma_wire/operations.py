"""Every operation a client can call, declared once.

An entry says what the operation is called, where it lives over HTTP, which parameters it
takes, where a request's Arrow table goes, how its answer is shaped and whether it may be
sent twice. The server dispatches by it (``chroma_core.api``) and routes by it, the client
builds its requests and decides its retries by it, ``/metrics`` labels requests with its
names, and the operations table of docs/protocol.md is :func:`markdown_table`, checked by a
test. Adding an operation is one entry here, the service method of the same name and the
client method that calls it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: may be carried out twice with the outcome of once: reads, get-or-create, set a status
SAFE = "safe"
#: safe when it carries a ``batch_key``, by which the server recognises a batch sent twice
BY_KEY = "by_key"
#: never sent again once it may have arrived: its reply is lost, the caller is told
NEVER = "never"


@dataclass(frozen=True)
class Operation:
    name: str
    method: str
    path: str
    #: every parameter it takes, path parameters included; any other is refused
    params: tuple[str, ...] = ()
    #: parameters passed to the service even when absent (as None), so that the service
    #: names them in its error; the others, when absent, take the service's default
    required: tuple[str, ...] = ()
    #: the service parameter a request's Arrow table is passed as, if it takes one
    table: str | None = None
    #: the reply key the service's answer goes under; "" when the answer is the reply
    #: itself (a dict, a table, a result, or a dict and a table)
    reply: str = ""
    #: whether the client may send it again after it may have arrived (SAFE, BY_KEY, NEVER)
    resend: str = NEVER
    doc: str = ""


SPACE = ("space",)

OPERATIONS: tuple[Operation, ...] = (
    Operation("version", "GET", "/api/v1/version", resend=SAFE,
              doc="server and protocol versions, and the store it serves"),
    Operation("plugins", "GET", "/-/plugins", reply="plugins", resend=SAFE,
              doc="loaded plugins, their hooks and settings"),
    Operation("algorithms", "GET", "/api/v1/algorithms", reply="algorithms", resend=SAFE,
              doc="algorithms `space.run` can name"),
    Operation("spaces", "GET", "/api/v1/spaces", reply="spaces", resend=SAFE,
              doc="every space with its row count"),
    Operation("space", "POST", "/api/v1/spaces", ("name", "metric", "model"), ("name",),
              reply="space", resend=SAFE, doc="get or create a space"),
    Operation("space_info", "GET", "/api/v1/spaces/{space}", SPACE, SPACE, reply="space",
              resend=SAFE, doc="one space with its row count"),
    Operation("delete_space", "DELETE", "/api/v1/spaces/{space}", SPACE, SPACE,
              reply="deleted", doc="drop a space with its rows, scores and triggers"),
    Operation("status", "GET", "/api/v1/spaces/{space}/status", SPACE, SPACE, resend=SAFE,
              doc="a space and what each plugin knows of it (its index)"),
    Operation("add", "POST", "/api/v1/spaces/{space}/rows", ("space", "batch_key"), SPACE,
              table="rows", reply="ids", resend=BY_KEY, doc="store a batch of rows"),
    Operation("upsert", "POST", "/api/v1/spaces/{space}/upsert", ("space", "batch_key"), SPACE,
              table="rows", reply="ids", resend=BY_KEY,
              doc="store a batch, each row replacing the stored row of its id"),
    Operation("update", "POST", "/api/v1/spaces/{space}/update", ("space", "batch_key"), SPACE,
              table="rows", reply="ids", resend=BY_KEY,
              doc="set catalogue fields of stored rows by id"),
    Operation("get", "POST", "/api/v1/spaces/{space}/get",
              ("space", "ids", "where", "limit", "offset", "include_embeddings"), SPACE,
              resend=SAFE, doc="rows by ids and filter"),
    Operation("count", "POST", "/api/v1/spaces/{space}/count", ("space", "where"), SPACE,
              reply="count", resend=SAFE, doc="rows matching a filter"),
    Operation("delete", "POST", "/api/v1/spaces/{space}/delete", ("space", "ids", "where"),
              SPACE, reply="deleted", doc="delete rows by ids and filter"),
    Operation("nearest_neighbors", "POST", "/api/v1/spaces/{space}/nearest_neighbors",
              ("space", "ids", "k", "where"), SPACE, table="queries", resend=SAFE,
              doc="k nearest rows of query vectors or stored ids"),
    Operation("run", "POST", "/api/v1/spaces/{space}/run/{algorithm:path}",
              ("space", "algorithm", "params"), ("space", "algorithm"),
              doc="run an algorithm plugin on a space"),
    Operation("priorities", "POST", "/api/v1/spaces/{space}/priorities",
              ("space", "n", "where", "min_priority"), SPACE, resend=SAFE,
              doc="scored inputs, highest priority first"),
    Operation("trigger_retraining", "POST", "/api/v1/spaces/{space}/triggers",
              ("space", "n", "min_priority", "where", "note", "strategy", "duplicate_radius"),
              SPACE, reply="trigger", doc="record a retraining trigger and deliver it"),
    Operation("watch", "POST", "/api/v1/spaces/{space}/watch",
              ("space", "after", "min_priority", "where", "wait", "limit"), SPACE, resend=SAFE,
              doc="new scored inputs and triggers after a position, waiting for one"),
    Operation("triggers", "GET", "/api/v1/triggers", ("space", "status"), reply="triggers",
              resend=SAFE, doc="triggers, newest first"),
    Operation("set_trigger_status", "POST", "/api/v1/triggers/{trigger_id:int}/status",
              ("trigger_id", "status"), ("trigger_id", "status"), reply="trigger",
              resend=SAFE, doc="move a trigger to another status"),
    Operation("trigger_items", "GET", "/api/v1/triggers/{trigger_id:int}/items",
              ("trigger_id",), ("trigger_id",), resend=SAFE, doc="the inputs a trigger holds"),
    Operation("export_rows", "POST", "/api/v1/spaces/{space}/export/rows",
              ("space", "after_seq", "limit"), ("space", "limit"), resend=SAFE,
              doc="a page of rows with their seqs, for a back-up"),
    Operation("export_priorities", "POST", "/api/v1/spaces/{space}/export/priorities",
              ("space", "after_id", "limit"), ("space", "limit"), resend=SAFE,
              doc="a page of stored scores, for a back-up"),
    Operation("restore_space", "POST", "/api/v1/spaces/{space}/restore",
              ("space", "metric", "model", "created_at", "dim"), SPACE, reply="space",
              doc="create a space as a back-up recorded it"),
    Operation("restore_rows", "POST", "/api/v1/spaces/{space}/restore/rows", SPACE, SPACE,
              table="rows", reply="count", doc="store backed-up rows under their seqs"),
    Operation("restore_priorities", "POST", "/api/v1/spaces/{space}/restore/priorities",
              SPACE, SPACE, table="scores", reply="count", doc="store backed-up scores"),
    Operation("restore_trigger", "POST", "/api/v1/spaces/{space}/restore/triggers",
              ("space", "trigger"), ("space", "trigger"), table="items", reply="trigger",
              doc="store a backed-up trigger with its items"),
    Operation("restore_finish", "POST", "/api/v1/spaces/{space}/restore/finish", SPACE, SPACE,
              reply="finished", resend=SAFE,
              doc="mark a restored space whole (until then a restart removes it)"),
)  # fmt: skip

BY_NAME: dict[str, Operation] = {op.name: op for op in OPERATIONS}


def may_resend(name: str, params: dict) -> bool:
    """Whether operation ``name`` with ``params`` may be sent again after it may have
    arrived: the client's retry policy."""
    op = BY_NAME.get(name)
    if op is None:
        return False
    return op.resend == SAFE or (op.resend == BY_KEY and params.get("batch_key") is not None)


def markdown_table() -> str:
    """The operations as the Markdown table docs/protocol.md shows."""
    resend = {SAFE: "yes", BY_KEY: "with its batch key", NEVER: "no"}
    lines = [
        "| operation | route | parameters | table in | sent again | what it does |",
        "|---|---|---|---|---|---|",
    ]
    for op in OPERATIONS:
        params = ", ".join(f"`{p}`" for p in op.params) or "none"
        lines.append(
            f"| `{op.name}` | `{op.method} {op.path}` | {params} | "
            f"{f'`{op.table}`' if op.table else ''} | {resend[op.resend]} | {op.doc} |"
        )
    return "\n".join(lines) + "\n"
