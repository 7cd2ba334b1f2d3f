"""The client stands alone: importing it loads no server module, and the client package with
the wire package, installed into a clean environment without the server, talks to a server."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the server's packages and what only the server needs
SERVER_PACKAGES = {"chroma_core", "chroma_cli", "chroma_triggers", "pluggy", "starlette", "uvicorn"}
SERVER_PREFIXES = ("chroma_store_", "chroma_algo_", "prometheus_client")


def server_modules(names) -> list[str]:
    return [m for m in names if m.split(".")[0] in SERVER_PACKAGES or m.startswith(SERVER_PREFIXES)]


def test_importing_the_client_loads_no_server_module():
    loaded = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import json, sys; import chroma_client, chroma_client.extract; "
                "print(json.dumps(sorted(sys.modules)))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert "chroma_client" in loaded and "chroma_wire" in loaded
    assert server_modules(loaded) == []


def test_the_client_package_alone_talks_to_a_server(server, tmp_path):
    venv = tmp_path / "client-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(ROOT / "wire"),
            str(ROOT / "client"),
        ],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    script = textwrap.dedent(
        f"""
        import importlib.util, json, sys
        import numpy as np
        from chroma_client import Client, errors

        missing = [m for m in ("chroma_core", "pluggy", "starlette", "uvicorn")
                   if importlib.util.find_spec(m) is not None]
        client = Client({server.url!r})
        space = client.space("alone", metric="l2")
        vectors = np.eye(4, dtype=np.float32)
        ids = space.add(vectors, dataset="d", labels=["a", "b", "a", "b"])
        found = space.nearest_neighbors(queries=vectors[:1], k=2)
        try:
            space.nearest_neighbors(queries=np.ones((1, 3), np.float32), k=1)
            wrong_dimension = None
        except errors.DimensionMismatch as exc:
            wrong_dimension = type(exc).__name__
        manifest = client.export_to({str(tmp_path / "backup")!r}, "alone", progress=False)
        try:
            Client(path={str(tmp_path / "embedded")!r})
            embedded = None
        except ImportError as exc:
            embedded = str(exc)
        print(json.dumps({{
            "server_modules_installed": missing,
            "first": ids[0],
            "nearest": found["id"].tolist(),
            "count": space.count(),
            "wrong_dimension": wrong_dimension,
            "exported_rows": manifest["spaces"][0]["rows"],
            "embedded": embedded,
        }}))
        """
    )
    # run outside the source tree, whose folders would otherwise be importable from the cwd
    run = subprocess.run([str(python), "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    assert answer["server_modules_installed"] == []
    assert answer["nearest"][0] == answer["first"]
    assert answer["count"] == 4
    assert answer["wrong_dimension"] == "DimensionMismatch"
    assert answer["exported_rows"] == 4
    assert "needs the server package" in answer["embedded"]


def test_every_error_a_server_can_send_is_a_type_the_client_exports():
    import chroma_client.errors as client_errors
    from chroma_wire.errors import ERRORS

    # the wire's vocabulary; a server's own start-up errors never travel
    sent = {name: kind for name, kind in ERRORS.items() if kind.__module__ == "chroma_wire.errors"}
    assert sorted(name for name in sent if name not in client_errors.__all__) == []
    for name, kind in sent.items():
        assert getattr(client_errors, name) is kind
