"""Crash and concurrency rounds against real ``chroma-server`` processes.

Writers add batches whose whole content follows from ``(seed, writer, batch number)``, so a
check can recompute what every batch must hold. Each writer journals a batch's number before
its add is sent (``start``) and after the add returned (``ack``), or the error it raised
(``fail``): an acknowledged batch must be stored whole and byte for byte; a batch whose add
failed or was cut short may be stored whole or not at all; none may be stored in part.

tests/test_crash.py and tests/test_concurrency.py run short seeded rounds of everything here;
bench/reliability.py runs long ones and prints the figures.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from chroma_client import Client
from chroma_client.errors import ChromaError, ConnectionFailed
from tests.conftest import Server

SPACE = "reliability"
#: what an add raises while the server is down: its retries ran out, or it was never sent
LOST_SERVER = ("ConnectionFailed", "RetriesExhausted")
DIM = 16
CLASSES = 4
#: how long a client waits for one answer; a killed server fails requests at once anyway
TIMEOUT = 60.0
#: how long a restarted server may take to answer: the embedded ClickHouse engine loads its
#: tables first, which takes seconds, and far longer on a machine busy with other work
RESTART_SECONDS = 300.0
#: every server here: no background recomputation of priorities, so scores change only when
#: a test asks; no shared memory, so nothing of a killed server is left in /dev/shm
SERVER_ENV = {"CHROMA_PRIORITY_REFRESH_SECONDS": "0", "CHROMA_SHARED_MEMORY": "0"}


def server_env(store: str, **extra: str) -> dict[str, str]:
    """A server on ``store`` (ClickHouse as embedded chdb under the data directory)."""
    return {"CHROMA_STORE": store, **SERVER_ENV, **extra}


# --- what a batch holds ---------------------------------------------------------------
@dataclass
class Batch:
    key: str
    ids: list[str]
    embeddings: np.ndarray
    fields: dict
    metadata: list[str]  # the JSON text each row's metadata is stored as

    def add_to(self, space) -> None:
        space.add(self.embeddings, ids=self.ids, **self.fields)


def batch_key(writer: int, number: int) -> str:
    return f"w{writer}-b{number}"


def make_batch(seed: int, writer: int, number: int, dim: int = DIM) -> Batch:
    """Batch ``number`` of ``writer``: 4-24 rows, two of three batches labelled training
    rows, the third triage rows with the model's inference and class probabilities."""
    rng = np.random.default_rng([seed, writer, number])
    n = int(rng.integers(4, 25))
    key = batch_key(writer, number)
    centres = np.random.default_rng([seed, dim]).standard_normal((CLASSES, dim)) * 3
    classes = rng.integers(0, CLASSES, n)
    embeddings = (centres[classes] + rng.standard_normal((n, dim))).astype(np.float32)
    ids = [f"{key}-r{r}" for r in range(n)]
    metadata = [
        {
            "batch": key,
            "writer": writer,
            "number": number,
            "row": r,
            "score": float(rng.random()),
            "note": f"ligne {r} – {key} ✓",
            "tags": [int(t) for t in rng.integers(0, 100, 2)],
        }
        for r in range(n)
    ]
    fields: dict = {
        "dataset": f"w{writer}",
        "input_uris": [f"s3://bucket/{key}/{r}.png" for r in range(n)],
        "metadata": metadata,
    }
    if number % 3 != 2:
        fields |= {"context": "training", "labels": [str(c) for c in classes]}
    else:
        logits = rng.standard_normal((n, CLASSES))
        outputs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        fields |= {
            "context": "triage",
            "inferences": [str(c) for c in outputs.argmax(axis=1)],
            "outputs": outputs.astype(np.float32),
        }
    return Batch(key, ids, embeddings, fields, [json.dumps(m) for m in metadata])


# --- writers and readers (each in a process of its own) --------------------------------
def context() -> multiprocessing.context.BaseContext:
    """Processes forked from a server process that has imported the client once: 16 of them
    start in a moment even on 2 cores, and none inherits the test's threads."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.reliability"])
    return ctx


class Journal:
    """One writer's record of its batches, a line per event, appended as they happen."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, event: str, number: int, *words) -> None:
        line = " ".join(str(w) for w in (event, number, f"{time.time():.3f}", *words))
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(line.replace("\n", " ") + "\n")

    def read(self) -> tuple[list[int], set[int], dict[int, str]]:
        """``(started, acknowledged, failed: number -> error)``."""
        started, acked, failed = [], set(), {}
        if not self.path.exists():
            return started, acked, failed
        for line in self.path.read_text(encoding="utf-8").splitlines():
            event, number, _, *rest = line.split(" ", 3)
            if event == "start":
                started.append(int(number))
            elif event == "ack":
                acked.add(int(number))
            elif event == "fail":
                failed[int(number)] = " ".join(rest)
        return started, acked, failed


def _connect(url: str, stop, space: str):
    """A client and its space, once the server answers (None if told to stop first)."""
    while not stop.is_set():
        if not _listening(url):
            # a plain connect, not a client each time: a loop of 16 processes making HTTP
            # clients would take the CPU a restarting server needs
            time.sleep(0.05)
            continue
        client = Client(url, timeout=TIMEOUT, shared_memory=False)
        try:
            return client, client.space(space)
        except ConnectionFailed:
            client.close()
            time.sleep(0.05)
    return None


def _listening(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


def write_batches(
    url: str,
    seed: int,
    writer: int,
    journal: str,
    stop,
    space: str = SPACE,
    pause: float = 0.0,
    ready=None,
):
    """Add batches 0, 1, 2... until ``stop`` is set, ``pause`` seconds apart. A failed add
    is journalled and the writer moves on to the next batch once the server answers again
    (a restarted one). ``ready``: a barrier to wait at once connected."""
    log = Journal(Path(journal))
    number = 0
    connected = _connect(url, stop, space)
    if ready is not None:
        ready.wait(timeout=300)
    while connected is not None and (number == 0 or not stop.is_set()):
        client, target = connected
        batch = make_batch(seed, writer, number)
        log.write("start", number)
        try:
            batch.add_to(target)
        except ChromaError as exc:
            log.write("fail", number, type(exc).__name__, exc.detail[:300])
            client.close()
            connected = _connect(url, stop, space)
        else:
            log.write("ack", number)
        number += 1
        if pause:
            stop.wait(pause)
    if connected is not None:
        connected[0].close()


def read_batches(
    url: str, seed: int, writers: int, report: str, stop, space: str = SPACE, ready=None
):
    """Read while writers write, until ``stop``: every batch seen is seen whole, the row
    count never goes back, and neighbours of stored rows are found. Writes a JSON report:
    operations by kind, problems, errors. ``ready``: a barrier to wait at once connected."""
    rng = np.random.default_rng([seed, 1_000_000 + os.getpid()])
    ops: Counter[str] = Counter()
    problems: list[str] = []
    errors: list[str] = []
    rows_seen = 0
    last_count = 0
    with Client(url, timeout=TIMEOUT, shared_memory=False) as client:
        target = client.space(space)
        if ready is not None:
            ready.wait(timeout=300)
        while not ops or not stop.is_set():
            writer = int(rng.integers(writers))
            try:
                count = target.count()
                ops["count"] += 1
                if count < last_count:
                    problems.append(f"count went back from {last_count} to {count}")
                last_count = count
                rows = target.get(where={"dataset": f"w{writer}"})
                ops["get by dataset"] += 1
                rows_seen += len(rows)
                numbers = _whole_batches(seed, writer, rows, problems)
                if numbers:
                    # a batch just written, counted through a metadata filter
                    key = batch_key(writer, max(numbers))
                    seen = target.count(where={"batch": key})
                    ops["count by metadata"] += 1
                    expected = len(make_batch(seed, writer, max(numbers)).ids)
                    if seen != expected:
                        problems.append(f"batch {key}: {seen} of {expected} rows counted")
                    near = target.nearest_neighbors(ids=[f"{key}-r0"], k=5)
                    ops["nearest_neighbors"] += 1
                    # rows read just now are all still there: k of them besides itself
                    if len(near) < min(5, len(rows) - 1):
                        problems.append(f"{key}-r0: {len(near)} neighbours of 5")
            except ChromaError as exc:
                errors.append(f"{type(exc).__name__}: {exc.detail[:300]}")
                if len(errors) > 20:
                    break
    Path(report).write_text(
        json.dumps({"ops": ops, "rows_seen": rows_seen, "problems": problems, "errors": errors})
    )


def _whole_batches(seed: int, writer: int, rows: pd.DataFrame, problems: list[str]) -> list[int]:
    """The batch numbers of ``writer`` in ``rows``, checking each is there whole and that
    they run 0, 1, 2... (a writer adds one batch after the other)."""
    if not len(rows):
        return []
    keys = rows["metadata"].map(lambda m: m.get("number", -1))
    numbers = sorted(set(keys))
    sizes = keys.value_counts()
    for number in numbers:
        expected = len(make_batch(seed, writer, number).ids)
        if sizes[number] != expected:
            problems.append(
                f"batch {batch_key(writer, number)}: {sizes[number]} of {expected} rows seen"
            )
    if numbers != list(range(len(numbers))):
        problems.append(f"writer {writer}: batches {numbers[:20]} do not run from 0")
    return numbers


# --- checks after the fact ---------------------------------------------------------------
@dataclass
class Checked:
    """What a check of the stored batches found."""

    batches_acked: int = 0
    batches_unknown_present: int = 0
    batches_unknown_absent: int = 0
    rows_checked: int = 0
    errors: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


def check_batches(
    client: Client,
    seed: int,
    journals: list[Path],
    space: str = SPACE,
    where: dict | None = None,
    expected_errors: tuple[str, ...] = (),
) -> Checked:
    """Every acknowledged batch stored whole and identical; every batch in doubt whole or
    absent; nothing else stored (among rows matching ``where``). Errors the writers met
    other than ``expected_errors`` are problems too."""
    out = Checked()
    stored = client.space(space).get(where=where, include_embeddings=True)
    by_key = {key: rows for key, rows in stored.groupby(stored["metadata"].map(_key))}
    known: set[str] = set()
    for writer, path in enumerate(journals):
        started, acked, failed = Journal(path).read()
        for number, error in failed.items():
            kind = error.split(" ", 1)[0]
            out.errors[kind] += 1
            if kind not in expected_errors and len(out.problems) < 20:
                out.problems.append(f"{batch_key(writer, number)}: add raised {error}")
        for number in started:
            key = batch_key(writer, number)
            known.add(key)
            rows = by_key.get(key)
            if number not in acked and rows is None:
                out.batches_unknown_absent += 1
                continue
            if rows is None:
                out.problems.append(f"{key}: acknowledged but absent")
                continue
            problem = _differences(make_batch(seed, writer, number), rows)
            if problem:
                out.problems.append(f"{key}: {problem}")
            out.rows_checked += len(rows)
            if number in acked:
                out.batches_acked += 1
            else:
                out.batches_unknown_present += 1
    stray = sorted(set(by_key) - known)
    if stray:
        out.problems.append(f"batches stored that no writer started: {stray[:10]}")
    counted = client.space(space).count(where=where)
    if counted != len(stored):
        out.problems.append(f"count {counted} but {len(stored)} rows read")
    return out


def _key(metadata: dict) -> str:
    return str(metadata.get("batch"))


def _differences(batch: Batch, rows: pd.DataFrame) -> str | None:
    """What differs between a batch as written and its rows as stored (None: nothing)."""
    rows = rows.set_index("id")
    if sorted(rows.index) != sorted(batch.ids):
        return f"{len(rows)} of {len(batch.ids)} rows stored (in part)"
    rows = rows.loc[batch.ids]
    stored = np.stack(rows["embedding"].to_list()).astype(np.float32)
    if stored.tobytes() != batch.embeddings.tobytes():
        return "embeddings differ"
    if [json.dumps(m) for m in rows["metadata"]] != batch.metadata:
        return "metadata differs"
    f = batch.fields
    n = len(batch.ids)
    expected = {
        "dataset": [f["dataset"]] * n,
        "context": [f["context"]] * n,
        "input_uri": f["input_uris"],
        "label": f.get("labels", [None] * n),
        "inference": f.get("inferences", [None] * n),
    }
    for column, values in expected.items():
        if [None if pd.isna(v) else v for v in rows[column]] != values:
            return f"{column} differs"
    outputs = f.get("outputs")
    got = rows["output"].to_list()
    if outputs is None:
        if any(o is not None for o in got):
            return "outputs stored for rows sent without"
    elif np.stack(got).astype(np.float32).tobytes() != outputs.tobytes():
        return "outputs differ"
    return None


def check_index(
    client: Client, space: str = SPACE, k: int = 5, sample: int | None = None
) -> tuple[int, int, list[str]]:
    """Every stored vector, searched for, finds its own row, once the index has caught up:
    ``(rows queried, rows not found, problems)``. A row not among its ``k`` nearest is
    searched again with a wider net. An HNSW search misses a few rows whatever the index
    holds (in our runs up to 0.8% of 40,000 clustered rows at the default breadth, from an
    index holding exactly the store's rows and vectors, and as many from a fresh build of
    the same rows), so up to one in 100 stored rows may stay unfound. A lost 4 KiB page,
    which the index checksum must catch, loses 1-6% of a small space; the similarity
    plugin's own tests require every row found. ``sample``: query that many rows, picked
    at random, instead of all."""
    target = client.space(space)
    status = target.wait_for_index(timeout=300)
    problems = []
    if status["index"]["indexed"] != status["space"]["count"]:
        problems.append(
            f"index holds {status['index']['indexed']} rows, the store {status['space']['count']}"
        )
    stored = target.get(include_embeddings=True)
    if not len(stored):
        return 0, 0, problems
    allowed = len(stored) // 100
    if sample is not None and sample < len(stored):
        stored = stored.sample(sample, random_state=len(stored))
    vectors = np.stack(stored["embedding"].to_list())
    ids = stored["id"].to_numpy()
    missed = np.zeros(len(ids), dtype=bool)
    for start in range(0, len(ids), 5000):
        stop = min(start + 5000, len(ids))
        missed[start:stop] = ~_finds_itself(target, vectors[start:stop], ids[start:stop], k)
    lost = np.array([], dtype=object)
    if missed.any():
        again = _finds_itself(target, vectors[missed], ids[missed], 10 * k)
        lost = ids[missed][~again]
    if len(lost) > allowed:
        problems.append(f"{len(lost)} stored rows not found by their own vector: {lost[:5]}")
    return len(ids), len(lost), problems


def _finds_itself(space, vectors: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    found = space.nearest_neighbors(queries=vectors, k=k)
    hit = found["id"].to_numpy() == ids[found["query"].to_numpy()]
    out = np.zeros(len(ids), dtype=bool)
    out[found["query"].to_numpy()[hit]] = True
    return out


def priorities_snapshot(space) -> pd.DataFrame:
    return space.priorities(n=None).sort_values("id").reset_index(drop=True)


def triggers_snapshot(client: Client) -> list:
    return [(t, client.trigger_items(t.id).to_json()) for t in client.triggers()["trigger"]]


def check_scores(space, before: pd.DataFrame, triage: int) -> tuple[str, list[str]]:
    """After a kill during a background priority computation of a space of ``triage``
    triage rows: the stored scores are ``before`` exactly, or the new computation's whole
    set: every triage row scored against the current training set, at one time."""
    now = priorities_snapshot(space)
    if now.equals(before):
        return "old scores intact", []
    problems = []
    version = space.priority_status()["training_version"]
    if len(now) != triage or set(now["training_version"]) != {version}:
        problems.append(
            f"{len(now)} scores of {triage} triage rows, training versions "
            f"{set(now['training_version'])}, current {version}"
        )
    if now["computed_at"].nunique() != 1:
        problems.append("scores of several computations are mixed")
    return "new scores complete", problems


# --- the rounds --------------------------------------------------------------------------
@dataclass
class Figures:
    store: str
    rounds: int = 0
    kills: int = 0
    seconds: float = 0.0
    batches_acked: int = 0
    batches_unknown_present: int = 0
    batches_unknown_absent: int = 0
    rows_checked: int = 0
    rows_queried: int = 0
    rows_unfound: int = 0
    scores_checked: int = 0
    triggers_checked: int = 0
    processes: int = 0
    operations: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def take(self, checked: Checked) -> None:
        self.batches_acked = checked.batches_acked
        self.batches_unknown_present = checked.batches_unknown_present
        self.batches_unknown_absent = checked.batches_unknown_absent
        self.rows_checked += checked.rows_checked
        self.errors = checked.errors
        self.problems += checked.problems


def _create_space(url: str, space: str = SPACE) -> None:
    with Client(url, timeout=TIMEOUT, shared_memory=False) as client:
        client.space(space)


def crash_rounds(
    store: str,
    directory: Path,
    *,
    rounds: int,
    writers: int = 4,
    seed: int = 0,
    wait: tuple[float, float] = (0.2, 1.0),
    pause: float = 0.0,
    scored_rows: int = 2000,
) -> Figures:
    """``writers`` processes add batches while the server is killed ``rounds`` times at
    seeded random moments and restarted on the same data directory. Before each kill, on a
    second space of ``scored_rows`` rows, a labelled training batch is added, priorities
    computed and a trigger recorded; every other round a background computation is started
    just before the kill. After each restart the scores and triggers are checked; at the
    end every batch, and the index against the store."""
    rng = np.random.default_rng(seed)
    figures = Figures(store)
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "data"
    env = server_env(store)
    server = Server(data, env=env)
    started = time.monotonic()
    ctx = context()
    stop = ctx.Event()
    journals = [directory / f"writer-{w}.log" for w in range(writers)]
    processes = []
    try:
        _create_space(server.url)
        with Client(server.url, timeout=TIMEOUT, shared_memory=False) as client:
            triage = _load(client.space("scores"), seed, scored_rows)
        processes = [
            ctx.Process(
                target=write_batches, args=(server.url, seed, w, str(j), stop, SPACE, pause)
            )
            for w, j in enumerate(journals)
        ]
        for process in processes:
            process.start()
        for number in range(rounds):
            time.sleep(float(rng.uniform(*wait)))
            background = number % 2 == 1
            with Client(server.url, timeout=TIMEOUT, shared_memory=False) as client:
                scored = client.space("scores")
                # a new training batch: the next computation's scores differ from these
                make_batch(seed, 1000 + number, 0).add_to(scored)
                scored.compute_priorities(k=5)
                scored.trigger_retraining(n=5, note=f"before kill {number}")
                scores, triggers = priorities_snapshot(scored), triggers_snapshot(client)
                if background:
                    make_batch(seed, 1000 + number, 1).add_to(scored)
                    scored.compute_priorities(k=5, background=True)
                    # into the computation: reading, scoring or storing
                    time.sleep(float(rng.uniform(0, 0.3)))
            server.kill()
            figures.kills += 1
            server = Server(data, env=env, port=server.port, timeout=RESTART_SECONDS)
            with Client(server.url, timeout=TIMEOUT, shared_memory=False) as client:
                scored = client.space("scores")
                if background:
                    outcome, problems = check_scores(scored, scores, triage)
                    figures.outcomes[f"background priorities: {outcome}"] += 1
                    figures.problems += problems
                elif not priorities_snapshot(scored).equals(scores):
                    figures.problems.append(f"round {number}: priorities changed by a kill")
                figures.scores_checked += len(scores)
                status = scored.priority_status()
                if status["job"] is not None:
                    figures.problems.append(f"a job survived the kill: {status['job']}")
                if triggers_snapshot(client) != triggers:
                    figures.problems.append(f"round {number}: triggers changed by a kill")
                figures.triggers_checked += len(triggers)
            figures.rounds += 1
            if figures.problems:
                break
        stop.set()
        for process in processes:
            process.join(timeout=120)
        with Client(server.url, timeout=TIMEOUT, shared_memory=False) as client:
            checked = check_batches(client, seed, journals, expected_errors=LOST_SERVER)
            figures.take(checked)
            queried, unfound, problems = check_index(client)
            figures.rows_queried += queried
            figures.rows_unfound += unfound
            figures.problems += problems
    finally:
        stop.set()
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
        server.stop()
    figures.problems += _server_failures(server.log)
    figures.seconds = time.monotonic() - started
    return figures


def _server_failures(log: Path) -> list[str]:
    """Operations that failed inside a server (logged with their traceback)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    failed = re.findall(r"operation \S+ failed", text)
    locked = text.count("database is locked")
    out = [f"the server log has {n} x {what}" for what, n in Counter(failed).items()]
    if locked:
        out.append(f"the server log mentions 'database is locked' {locked} times")
    return out


def index_save_rounds(
    store: str,
    directory: Path,
    *,
    rounds: int,
    rows: int = 30_000,
    seed: int = 0,
    tear_every: int = 2,
    sample: int | None = 3000,
) -> Figures:
    """Kill the server while it saves a space's index: with saves after every indexing step,
    a writer adds batches, and the server is killed as soon as a save's temporary file
    appears (plus a random few milliseconds). In every ``tear_every``-th round a page of the
    saved index file is then zeroed, as a disk that lost a write would leave it. After each
    restart, every stored vector must find its own row."""
    rng = np.random.default_rng(seed)
    figures = Figures(store)
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "data"
    env = server_env(store, CHROMA_SIMILARITY_SAVE_SECONDS="0")
    space_name = "saves"
    index_dir = data / "indexes"
    server = Server(data, env=env)
    started = time.monotonic()
    ctx = context()
    try:
        with Client(server.url, timeout=TIMEOUT, shared_memory=False) as client:
            space = client.space(space_name)
            base = np.random.default_rng([seed, 7]).standard_normal((rows, DIM))
            for start in range(0, rows, 5000):
                chunk = base[start : start + 5000].astype(np.float32)
                space.add(
                    chunk, dataset="base", ids=[f"base-{start + i}" for i in range(len(chunk))]
                )
            space.wait_for_index(timeout=600)
        # one writer per round, numbered by the round
        journals = [directory / f"save-writer-{number}.log" for number in range(rounds)]
        for number in range(rounds):
            stop = ctx.Event()
            writer = ctx.Process(
                target=write_batches,
                args=(server.url, seed, number, str(journals[number]), stop, space_name),
            )
            writer.start()
            tmp = index_dir / f"{space_name}.hnsw.tmp"
            deadline = time.monotonic() + 30
            while not tmp.exists() and time.monotonic() < deadline:
                time.sleep(0.0005)
            # the first kill lands as the save begins, the others a little into it
            time.sleep(float(rng.uniform(0, 0.004)) if number else 0.0)
            server.kill()
            figures.kills += 1
            stop.set()
            writer.join(timeout=60)
            left = {p.name.removeprefix(space_name) for p in index_dir.iterdir()}
            state = "saving" if {".hnsw.tmp", ".json.tmp"} & left else "between saves"
            if ".json" not in left:
                state = "meta replaced"
            torn = tear_every and number % tear_every == tear_every - 1 and ".hnsw" in left
            if torn:
                path = index_dir / f"{space_name}.hnsw"
                blob = bytearray(path.read_bytes())
                at = int(len(blob) * rng.uniform(0.2, 0.9)) // 4096 * 4096
                blob[at : at + 4096] = bytes(4096)
                path.write_bytes(bytes(blob))
                state += ", page lost"
            figures.outcomes[f"killed {state}"] += 1
            server = Server(data, env=env, port=server.port, timeout=RESTART_SECONDS)
            with Client(server.url, timeout=TIMEOUT, shared_memory=False) as client:
                # the restarted service sees no leftovers once the index is opened
                queried, unfound, problems = check_index(client, space_name, sample=sample)
                figures.rows_queried += queried
                figures.rows_unfound += unfound
                figures.problems += problems
            figures.rounds += 1
            if figures.problems:
                break
        with Client(server.url, timeout=TIMEOUT, shared_memory=False) as client:
            checked = check_batches(
                client,
                seed,
                journals[: figures.rounds],
                space=space_name,
                where={"dataset": {"$ne": "base"}},
                expected_errors=LOST_SERVER,
            )
            figures.take(checked)
    finally:
        server.stop()
    log = server.log.read_text(errors="replace")
    figures.outcomes["index rebuilt on start"] = log.count("rebuilding")
    figures.problems += _server_failures(server.log)
    figures.seconds = time.monotonic() - started
    return figures


def priority_kill_rounds(
    store: str, directory: Path, *, rounds: int, rows: int = 20_000, seed: int = 0
) -> Figures:
    """Kill the server during background priority computations of a space of ``rows``
    rows: each round adds a labelled training batch (so the next scores differ), starts a
    computation and kills the server at a random moment within about its duration. After
    the restart no job may show as running or done, and the stored scores must be the last
    complete set exactly, or the new set complete: every triage row scored against the
    current training set, at one time. Rounds aim their kills at the computation's phases
    in turn: reading rows, scoring, storing the scores."""
    rng = np.random.default_rng(seed)
    figures = Figures(store)
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "data"
    env = server_env(store)
    server = Server(data, env=env)
    started = time.monotonic()
    try:
        with Client(server.url, timeout=TIMEOUT, shared_memory=False) as client:
            space = client.space("scores")
            triage = _load(space, seed, rows)
            space.compute_priorities()
            before = priorities_snapshot(space)
        for number in range(rounds):
            with Client(server.url, timeout=TIMEOUT, shared_memory=False) as client:
                space = client.space("scores")
                extra = make_batch(seed, 1000 + number, 0)
                extra.add_to(space)
                space.compute_priorities(background=True)
                # into the phase this round aims at, or the first one after it
                aim = PHASES.index(PHASES[1 + number % 3])
                while (job := space.priority_status()["job"] or {}).get("state") == "running":
                    if PHASES.index(job.get("phase", "starting")) >= aim:
                        break
                time.sleep(float(rng.uniform(0, 0.02)))
            server.kill()
            figures.kills += 1
            server = Server(data, env=env, port=server.port, timeout=RESTART_SECONDS)
            with Client(server.url, timeout=TIMEOUT, shared_memory=False) as client:
                space = client.space("scores")
                status = space.priority_status()
                if status["job"] is not None:
                    figures.problems.append(f"a job survived the kill: {status['job']}")
                outcome, problems = check_scores(space, before, triage)
                figures.problems += [f"round {number}: {p}" for p in problems]
                now = before = priorities_snapshot(space)
                figures.scores_checked += len(now)
                figures.outcomes[f"killed {job.get('phase', 'after')}: {outcome}"] += 1
            figures.rounds += 1
            if figures.problems:
                break
    finally:
        server.stop()
    figures.problems += _server_failures(server.log)
    figures.seconds = time.monotonic() - started
    return figures


PHASES = ("starting", "reading", "scoring", "storing", "done")


def _load(space, seed: int, rows: int) -> int:
    """Fill a space with a quarter labelled training rows and the rest triage rows with
    the model's outputs; returns the number of triage rows."""
    rng = np.random.default_rng([seed, rows])
    centres = rng.standard_normal((CLASSES, DIM)) * 3
    classes = rng.integers(0, CLASSES, rows)
    vectors = (centres[classes] + rng.standard_normal((rows, DIM))).astype(np.float32)
    training = rows // 4
    space.add(
        vectors[:training],
        dataset="base",
        context="training",
        labels=[str(c) for c in classes[:training]],
        ids=[f"train-{i}" for i in range(training)],
    )
    logits = rng.standard_normal((rows - training, CLASSES))
    outputs = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    space.add(
        vectors[training:],
        dataset="base",
        context="triage",
        inferences=[str(c) for c in outputs.argmax(axis=1)],
        outputs=outputs,
        ids=[f"triage-{i}" for i in range(rows - training)],
    )
    return rows - training


def concurrency_run(
    store: str,
    directory: Path,
    *,
    writers: int = 8,
    readers: int = 8,
    seconds: float = 5.0,
    seed: int = 0,
) -> Figures:
    """``writers`` and ``readers`` processes against one server for ``seconds``: no call
    may fail, readers never see part of a batch, and in the end every batch is stored whole
    and the count is exact."""
    figures = Figures(store)
    directory.mkdir(parents=True, exist_ok=True)
    server = Server(directory / "data", env=server_env(store))
    ctx = context()
    stop = ctx.Event()
    journals = [directory / f"writer-{w}.log" for w in range(writers)]
    reports = [directory / f"reader-{r}.json" for r in range(readers)]
    # the clock starts once every process has connected: all of them run at once
    ready = ctx.Barrier(writers + readers + 1)
    processes = [
        ctx.Process(
            target=write_batches, args=(server.url, seed, w, str(j), stop, SPACE, 0.0, ready)
        )
        for w, j in enumerate(journals)
    ] + [
        ctx.Process(
            target=read_batches, args=(server.url, seed, writers, str(r), stop, SPACE, ready)
        )
        for r in reports
    ]
    try:
        _create_space(server.url)
        for process in processes:
            process.start()
        ready.wait(timeout=300)
        started = time.monotonic()
        time.sleep(seconds)
        stop.set()
        for process in processes:
            process.join(timeout=120)
        figures.seconds = time.monotonic() - started
        figures.processes = len(processes)
        with Client(server.url, timeout=TIMEOUT, shared_memory=False) as client:
            checked = check_batches(client, seed, journals)
            figures.take(checked)
            unknown = checked.batches_unknown_present + checked.batches_unknown_absent
            if unknown:
                figures.problems.append(f"{unknown} adds never returned")
            expected = sum(
                len(make_batch(seed, w, n).ids)
                for w, path in enumerate(journals)
                for n in Journal(path).read()[1]
            )
            if client.space(SPACE).count() != expected:
                figures.problems.append(
                    f"count {client.space(SPACE).count()}, acknowledged rows {expected}"
                )
            figures.operations["add"] = checked.batches_acked
            figures.operations["rows added"] = expected
        for process, report in zip(processes[writers:], reports, strict=True):
            if process.exitcode != 0 or not report.exists():
                figures.problems.append(f"reader {report.name} exited with {process.exitcode}")
                continue
            read = json.loads(report.read_text())
            figures.operations.update(read["ops"])
            figures.operations["rows read"] += read["rows_seen"]
            figures.problems += read["problems"][:10]
            for error in read["errors"]:
                figures.errors[error.split(":", 1)[0]] += 1
                figures.problems.append(f"a reader got {error}")
        for process in processes[:writers]:
            if process.exitcode != 0:
                figures.problems.append(f"a writer exited with {process.exitcode}")
    finally:
        stop.set()
        for process in processes:
            if process.is_alive():
                process.kill()
        server.stop()
    figures.problems += _server_failures(server.log)
    return figures
