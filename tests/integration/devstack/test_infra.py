"""corral.devstack brings NATS, Postgres and OpenBao up for real, keeps their data, and stops them.

Every stack here runs on free ports in its own temporary state dir, so it never clashes with a
``make up`` stack; every process a test starts is stopped by pid in the fixture's teardown.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from corral.devstack import ComponentDiedError, PortInUseError, Ports, Stack

INFRA = ("nats", "postgres", "openbao")
START_TIMEOUT = 60.0


def _running_pids(stack: Stack) -> dict[str, int]:
    return {s.name: s.pid for s in stack.status() if s.pid is not None}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _wait_dead(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if _pid_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _pid_alive(p)]
    return alive


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[list[Stack]]:
    """Infra-only stacks on free ports; whatever they started is stopped (by pid) afterwards."""
    stacks: list[Stack] = []
    seen: set[int] = set()
    yield stacks
    for stack in stacks:
        seen.update(_running_pids(stack).values())
        stack.stop()
    leftovers = _wait_dead(sorted(seen))
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"processes survived stop(): {leftovers}"


def _infra(make_stack: list[Stack], state_dir: Path, ports: Ports | None = None) -> Stack:
    stack = Stack(state_dir, ports or Ports.free(), services=False, environ={})
    make_stack.append(stack)
    return stack


def _nats_request(stack: Stack, subject: str, payload: dict[str, object]) -> dict[str, object]:
    """One request/reply over the raw NATS protocol (only libs/bus may import the client), as the
    stack's ``admin`` user."""
    body = json.dumps(payload).encode()
    admin = stack.nats_settings()
    password = admin.password.get_secret_value() if admin.password is not None else ""
    connect = {"verbose": False, "pedantic": False, "user": admin.user, "pass": password}
    with socket.create_connection(("127.0.0.1", stack.ports.nats), timeout=5) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"INFO ")
        sock.sendall(
            f"CONNECT {json.dumps(connect)}\r\n".encode()
            + b"SUB _INBOX.devstack 1\r\n"
            + f"PUB {subject} _INBOX.devstack {len(body)}\r\n".encode()
            + body
            + b"\r\n"
        )
        while True:
            line = reader.readline()
            assert line, "connection closed before the reply"
            if line.startswith(b"PING"):
                sock.sendall(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise AssertionError(line.decode())
            elif line.startswith(b"MSG "):
                size = int(line.split()[-1])
                reply: dict[str, object] = json.loads(reader.read(size + 2)[:size])
                return reply


def _jetstream_totals(stack: Stack) -> tuple[int, int]:
    jsz = httpx.get(f"{stack.nats_monitor_url}/jsz").json()
    return int(jsz.get("streams", 0)), int(jsz.get("messages", 0))


def _sql(dsn: str, *statements: str) -> object:
    """Run statements on a fresh asyncpg connection; the value of the last one."""

    async def run() -> object:
        conn = await asyncpg.connect(dsn)
        try:
            result: object = None
            for statement in statements:
                result = await conn.fetchval(statement)
            return result
        finally:
            await conn.close()

    return asyncio.run(run())


def _vault(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=f"{stack.vault_addr}/v1", headers={"X-Vault-Token": stack.vault_token})


def test_infrastructure_comes_up_healthy_on_the_ports_it_was_given(make_stack: list[Stack], tmp_path: Path) -> None:
    ports = Ports.free()
    stack = _infra(make_stack, tmp_path / "state", ports)

    stack.start(timeout=START_TIMEOUT)

    assert set(_running_pids(stack)) == set(INFRA)
    assert stack.nats_url == f"nats://127.0.0.1:{ports.nats}"
    nats_health = httpx.get(f"http://127.0.0.1:{ports.nats_monitor}/healthz", params={"js-enabled-only": "true"})
    assert nats_health.status_code == 200

    assert f"127.0.0.1:{ports.postgres}/" in stack.database_url
    assert _sql(stack.database_url, "SELECT 1") == 1
    assert _sql(stack.database_url, "SELECT current_database()") == "corral"
    # the embedded server's lean settings (postgres.LEAN_OPTIONS) took effect
    assert _sql(stack.database_url, "SHOW io_method") == "sync"
    assert _sql(stack.database_url, "SHOW shared_buffers") == "64MB"
    assert _sql(stack.database_url, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'io worker'") == 0

    assert stack.vault_addr == f"http://127.0.0.1:{ports.bao}"
    health = httpx.get(f"{stack.vault_addr}/v1/sys/health")
    assert health.status_code == 200
    assert health.json()["initialized"] is True
    assert health.json()["sealed"] is False
    with _vault(stack) as vault:
        mount = vault.get("/sys/mounts").json()["data"]["corral/"]
    assert mount["type"] == "kv"
    assert mount["options"]["version"] == "2"

    for secret_file in (stack.state.openbao_init_file, stack.state.api_key_file, stack.state.env_file):
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600, secret_file
    assert stack.api_key.startswith("sk-corral-dev-")
    assert len(stack.api_key) == len("sk-corral-dev-") + 32
    assert stack.state.env_file.read_text() == (
        f"ANTHROPIC_BASE_URL=http://127.0.0.1:{ports.gateway}\nANTHROPIC_API_KEY={stack.api_key}\n"
    )
    assert stack.client_env() == {
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{ports.gateway}",
        "ANTHROPIC_API_KEY": stack.api_key,
    }


def test_data_survives_stop_and_start(make_stack: list[Stack], tmp_path: Path) -> None:
    stack = _infra(make_stack, tmp_path / "state")
    stack.start(timeout=START_TIMEOUT)
    api_key = stack.api_key
    root_token = stack.vault_token

    _sql(
        stack.database_url,
        "CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)",
        "INSERT INTO notes VALUES (1, 'kept across down/up')",
    )
    with _vault(stack) as vault:
        written = vault.post("/corral/data/devstack/test", json={"data": {"password": "hunter2"}})
        assert written.status_code == 200, written.text
    created = _nats_request(
        stack,
        "$JS.API.STREAM.CREATE.DEVSTACK",
        {"name": "DEVSTACK", "subjects": ["devstack.>"], "storage": "file"},
    )
    assert "error" not in created, created
    ack = _nats_request(stack, "devstack.hello", {"hello": "world"})
    assert ack.get("stream") == "DEVSTACK"
    assert _jetstream_totals(stack) == (1, 1)
    pids = list(_running_pids(stack).values())

    stack.stop()

    assert _wait_dead(pids, timeout=1) == []
    assert stack.state.pid_names() == []
    assert _running_pids(stack) == {}

    stack.start(timeout=START_TIMEOUT)

    assert set(_running_pids(stack)) == set(INFRA)
    assert stack.api_key == api_key
    assert stack.vault_token == root_token
    assert _sql(stack.database_url, "SELECT body FROM notes WHERE id = 1") == "kept across down/up"
    with _vault(stack) as vault:
        secret = vault.get("/corral/data/devstack/test")
    assert secret.status_code == 200
    assert secret.json()["data"]["data"] == {"password": "hunter2"}
    assert _jetstream_totals(stack) == (1, 1)


def test_starting_a_running_stack_again_leaves_it_alone(make_stack: list[Stack], tmp_path: Path) -> None:
    stack = _infra(make_stack, tmp_path / "state")
    stack.start(timeout=START_TIMEOUT)
    before = _running_pids(stack)
    lines: list[str] = []

    again = Stack(stack.state.root, Ports.free(), services=False, environ={}, progress=lines.append)
    again.start(timeout=START_TIMEOUT)

    assert _running_pids(again) == before
    infra_fields = ("nats", "nats_monitor", "postgres", "bao", "bao_cluster")
    # components already running keep the ports they listen on, whatever the new Stack was given
    assert [getattr(again.ports, f) for f in infra_fields] == [getattr(stack.ports, f) for f in infra_fields]
    assert sum("already running" in line for line in lines) == len(INFRA)


def test_a_component_that_dies_is_reported_with_its_log_and_restarted_by_start(
    make_stack: list[Stack], tmp_path: Path
) -> None:
    stack = _infra(make_stack, tmp_path / "state")
    stack.start(timeout=START_TIMEOUT)
    others = {name: pid for name, pid in _running_pids(stack).items() if name != "nats"}
    stack.kill("nats", signal.SIGKILL)

    with pytest.raises(ComponentDiedError) as died:
        stack.wait_healthy(timeout=5)

    assert died.value.component == "nats"
    assert "Server is ready" in died.value.log_tail
    stack.start(timeout=START_TIMEOUT)
    restarted = _running_pids(stack)
    assert set(restarted) == set(INFRA)
    assert {name: restarted[name] for name in others} == others


def test_a_busy_port_fails_fast_naming_the_env_var_and_starts_nothing(make_stack: list[Stack], tmp_path: Path) -> None:
    ports = Ports.free()
    stack = _infra(make_stack, tmp_path / "state", ports)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports.bao))
        squatter.listen()
        began = time.monotonic()

        with pytest.raises(PortInUseError) as busy:
            stack.start(timeout=START_TIMEOUT)

    assert time.monotonic() - began < 5
    assert str(busy.value) == f"port {ports.bao} (openbao) is in use; set CORRAL_OPENBAO_PORT to another port"
    assert stack.state.pid_names() == []
    assert _running_pids(stack) == {}


def _cli(state_dir: Path, ports: Ports, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_") and k != "DATABASE_URL"}
    env.update(
        CORRAL_STATE_DIR=str(state_dir),
        CORRAL_NATS_PORT=str(ports.nats),
        CORRAL_NATS_MONITOR_PORT=str(ports.nats_monitor),
        CORRAL_POSTGRES_PORT=str(ports.postgres),
        CORRAL_OPENBAO_PORT=str(ports.bao),
        CORRAL_OPENBAO_CLUSTER_PORT=str(ports.bao_cluster),
        CORRAL_GATEWAY_PORT=str(ports.gateway),
        CORRAL_EMBEDDED_MODEL_PORT=str(ports.embedded_model),
    )
    return subprocess.run(
        [sys.executable, "-m", "corral.devstack", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_cli_brings_infrastructure_up_reports_it_and_takes_it_down(make_stack: list[Stack], tmp_path: Path) -> None:
    ports = Ports.free()
    state_dir = tmp_path / "state"
    _infra(make_stack, state_dir, ports)  # only for the teardown safety net

    up = _cli(state_dir, ports, "up", "--no-services")
    status = _cli(state_dir, ports, "status")
    down = _cli(state_dir, ports, "down")
    after = _cli(state_dir, ports, "status")

    assert up.returncode == 0, up.stdout + up.stderr
    assert "nats" in up.stdout
    assert "ready in" in up.stdout
    assert status.returncode == 0, status.stdout
    assert [line.split()[:2] for line in status.stdout.splitlines()] == [[name, "running"] for name in INFRA]
    assert f"port {ports.postgres}" in status.stdout
    assert down.returncode == 0, down.stdout + down.stderr
    assert [line.split()[:2] for line in after.stdout.splitlines()] == [[name, "stopped"] for name in INFRA]
    assert after.returncode == 3


def test_the_cli_exits_1_with_a_clear_message_when_a_port_is_busy(tmp_path: Path) -> None:
    ports = Ports.free()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports.nats))
        squatter.listen()

        up = _cli(tmp_path / "state", ports, "up", "--no-services")

    assert up.returncode == 1
    assert f"port {ports.nats} (nats) is in use; set CORRAL_NATS_PORT to another port" in up.stderr
    assert not list((tmp_path / "state" / "pids").glob("*.pid"))
