"""corral.devstack starts the services with the right environment and waits for the gateway.

The real services are exercised by the e2e suite; here each ``corral.<service>`` module is a
stub put first on the services' PYTHONPATH (through the ``service_env`` API), so this file tests
the launcher itself: order, environment, readiness through the gateway's ``/health``, a service
dying during start, and stopping everything by pid.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.devstack import ComponentDiedError, Ports, Stack

SERVICE_MODULES = {
    "embedded-model": "embedded_model",
    "session-store": "session_store",
    "gateway": "gateway",
    "harness": "harness",
    "sandbox-manager": "sandbox_manager",
    "credential-proxy": "credential_proxy",
}

STUB = r"""
import http.server, json, os, pathlib, signal, sys

KIND = {kind!r}
name = os.environ.get("CORRAL_HARNESS_WORKER_ID") or KIND
out = pathlib.Path(os.environ["STUB_OUT"])
if os.environ.get("STUB_DIE"):  # before the file the gateway stub's health counts it by
    print("stub " + name + ": dying on purpose", flush=True)
    sys.exit(3)
(out / (name + ".json")).write_text(json.dumps(dict(os.environ)))
port = {{"gateway": "CORRAL_GATEWAY_PORT", "embedded-model": "CORRAL_EMBEDDED_MODEL_PORT"}}.get(KIND)
if port is None:
    signal.pause()

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        names = {{p.stem for p in out.glob("*.json")}}
        services = {{s: "ok" if s in names else "missing"
                    for s in ("session-store", "sandbox-manager", "credential-proxy")}}
        services["harness"] = "ok" if any(n.startswith("harness-") for n in names) else "missing"
        ok = KIND != "gateway" or all(v == "ok" for v in services.values())
        body = json.dumps({{"status": "ok" if ok else "degraded", "services": services}}).encode()
        self.send_response(200 if ok else 503)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(os.environ[port])), Health).serve_forever()
"""


@pytest.fixture
def stubs(tmp_path: Path) -> tuple[Path, Path]:
    """(PYTHONPATH dir with stub corral.<service> packages, dir where stubs dump their env)."""
    root = tmp_path / "stubs"
    for kind, module in SERVICE_MODULES.items():
        package = root / "corral" / module
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "__main__.py").write_text(STUB.format(kind=kind))
    out = tmp_path / "stub-out"
    out.mkdir()
    return root, out


@pytest.fixture
def stacks() -> Iterator[list[Stack]]:
    made: list[Stack] = []
    yield made
    pids: list[int] = []
    for stack in made:
        pids += [s.pid for s in stack.status() if s.pid is not None]
        stack.stop()
    for pid in pids:
        if _alive_after(pid, seconds=5.0):
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"pid {pid} survived stop()")


def _alive_after(pid: int, *, seconds: float) -> bool:
    """Whether ``pid`` is still running (not gone, not a zombie awaiting its parent) after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return False
        if state == "Z":
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(0.05)


def _stack(
    stacks: list[Stack],
    state_dir: Path,
    stubs: tuple[Path, Path],
    harness_count: int | None = None,
    **extra: dict[str, str],
) -> Stack:
    root, out = stubs
    common = {"PYTHONPATH": str(root), "STUB_OUT": str(out)}
    service_env = {kind: dict(common) for kind in SERVICE_MODULES}
    for name, env in extra.items():
        service_env.setdefault(name, dict(common)).update(env)
    stack = Stack(
        state_dir,
        Ports.free(),
        service_env=service_env,
        harness_count=harness_count,
        environ={"ANTHROPIC_API_KEY": "sk-corral-dev-sourced", "CORRAL_LOG_LEVEL": "debug"},
    )
    stacks.append(stack)
    return stack


def test_up_starts_every_service_with_its_environment_and_waits_for_the_gateway(
    stacks: list[Stack], stubs: tuple[Path, Path], tmp_path: Path
) -> None:
    lines: list[str] = []
    stack = _stack(stacks, tmp_path / "state", stubs, harness_count=2)  # the default is one; each gets its own id
    stack.progress = lines.append

    stack.start(timeout=60)

    running = {s.name for s in stack.status() if s.running}
    assert running == {
        "nats",
        "postgres",
        "openbao",
        "embedded-model",
        "session-store",
        "gateway",
        "harness-1",
        "harness-2",
        "sandbox-manager",
        "credential-proxy",
    }
    assert any(line.startswith("gateway") and "ready in" in line for line in lines)
    _, out = stubs
    expected = running - {"nats", "postgres", "openbao"}
    deadline = time.monotonic() + 15  # each stub writes its environment once it has started
    while {p.stem for p in out.glob("*.json")} < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    envs = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    for name, env in envs.items():
        assert env["CORRAL_NATS_URL"] == stack.nats_url
        if name != "embedded-model":
            user = "harness" if name.startswith("harness-") else name
            assert env["CORRAL_NATS_USER"] == user
            assert env["CORRAL_NATS_PASSWORD"] == stack.nats_settings(user).password.get_secret_value()  # type: ignore[union-attr]
        assert env["CORRAL_LOG_LEVEL"] == "DEBUG"
        assert "ANTHROPIC_API_KEY" not in env
        assert ("CORRAL_OPENBAO_SECRET_ID" in env) == (env is envs["credential-proxy"])
        assert stack.vault_token not in env.values()
    login = stack.credential_proxy_login
    proxy = envs["credential-proxy"]
    assert (proxy["CORRAL_OPENBAO_ROLE_ID"], proxy["CORRAL_OPENBAO_SECRET_ID"]) == (login.role_id, login.secret_id)
    assert proxy["CORRAL_OPENBAO_ADDR"] == stack.vault_addr
    assert envs["session-store"]["CORRAL_POSTGRES_URL"] == stack.database_url
    assert envs["session-store"]["CORRAL_SESSION_STORE_BOOTSTRAP_API_KEY"] == stack.api_key
    assert envs["gateway"]["CORRAL_GATEWAY_PORT"] == str(stack.ports.gateway)
    assert envs["embedded-model"]["CORRAL_EMBEDDED_MODEL_PORT"] == str(stack.ports.embedded_model)
    for worker in ("harness-1", "harness-2"):
        assert envs[worker]["CORRAL_HARNESS_WORKER_ID"] == worker
        assert envs[worker]["CORRAL_MODEL_BASE_URL"] == f"http://127.0.0.1:{stack.ports.embedded_model}"
        assert envs[worker]["CORRAL_MODEL_API_KEY"] == "embedded"

    old_pid = stack.pid("harness-2")
    stack.restart_service("harness-2", timeout=30)
    assert stack.pid("harness-2") not in (None, old_pid)

    service_pids = [
        s.pid for s in stack.status() if s.pid is not None and s.name not in ("nats", "postgres", "openbao")
    ]
    stack.stop()
    assert all(not s.running for s in stack.status())
    for pid in service_pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_service_that_dies_during_up_is_named_with_its_log_and_this_run_is_undone(
    stacks: list[Stack], stubs: tuple[Path, Path], tmp_path: Path
) -> None:
    stack = _stack(stacks, tmp_path / "state", stubs, **{"sandbox-manager": {"STUB_DIE": "1"}})
    began = time.monotonic()

    with pytest.raises(ComponentDiedError) as died:
        stack.start(timeout=60)

    assert time.monotonic() - began < 30
    assert died.value.component == "sandbox-manager"
    assert "dying on purpose" in died.value.log_tail
    assert [s.name for s in stack.status() if s.running] == []
