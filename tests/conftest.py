"""Fixtures: the same client tests run embedded and against a real server subprocess."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, settings

from chroma_client import Client
from tests.stores import STORES, store_environment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``chroma-server`` run as a subprocess on a free loopback port."""

    def __init__(
        self,
        path: Path,
        env: dict | None = None,
        args: tuple = (),
        port: int | None = None,
        timeout: float = 30.0,
    ):
        """``port``: a port to take again, e.g. to restart a server where its clients are;
        ``timeout``: seconds to wait for it to answer."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.path = path
        self.env = env
        full_env = {**os.environ, "CHROMA_PATH": str(path), **(env or {})}
        server = Path(sys.executable).with_name("chroma-server")
        self.log = path.parent / f"server-{self.port}.log"
        # appended to: a server restarted on its port keeps one log
        self._log_file = open(self.log, "a")  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(
            [str(server), "--port", str(self.port), *args],
            env=full_env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chroma-server exited: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"chroma-server did not start: {self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: the server gets no chance to close anything, as in a crash."""
        self.process.kill()
        self.process.wait()
        self._log_file.close()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log_file.close()


@pytest.fixture(scope="session")
def servers(tmp_path_factory):
    """One ``chroma-server`` per store, started when a test first needs it."""
    started: dict[str, Server] = {}

    def get(store: str) -> Server:
        if store not in started:
            started[store] = Server(
                tmp_path_factory.mktemp(f"server-{store}") / "data", env={"CHROMA_STORE": store}
            )
        return started[store]

    yield get
    for srv in started.values():
        srv.stop()


@pytest.fixture
def server(servers):
    return servers("sqlite")


@pytest.fixture(
    params=[(mode, store) for store in STORES for mode in ("embedded", "http")],
    ids=lambda p: f"{p[1]}-{p[0]}",
)
def client(request, tmp_path, monkeypatch):
    """A client in each mode on each store; spaces are named per test so a shared server
    stays clean."""
    mode, store = request.param
    if mode == "embedded":
        for key, value in store_environment(store, tmp_path / "data").items():
            monkeypatch.setenv(key, value)
        c = Client(path=tmp_path / "data")
    else:
        c = Client(request.getfixturevalue("servers")(store).url)
    c.mode, c.store = mode, store
    yield c
    c.close()


@pytest.fixture
def space_name(request) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:80]
    return f"{base}_{uuid.uuid4().hex[:8]}"


# tests/test_properties.py: "ci" is small and the same on every run; "long" explores
# (CHROMA_HYPOTHESIS_PROFILE=long, or --hypothesis-profile=long) CHROMA_HYPOTHESIS_EXAMPLES
# examples, 2,000 unless set
settings.register_profile(
    "ci",
    max_examples=10,
    stateful_step_count=40,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=int(os.environ.get("CHROMA_HYPOTHESIS_EXAMPLES", "2000")),
    stateful_step_count=40,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("CHROMA_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="module")
def shm_server(tmp_path_factory):
    """A server whose shared-memory directory is private to these tests."""
    root = tmp_path_factory.mktemp("shm")
    directory = root / "shm"
    directory.mkdir()
    server = Server(root / "data", env={"CHROMA_SHARED_MEMORY_DIR": str(directory)})
    server.shm = directory
    yield server
    server.stop()
