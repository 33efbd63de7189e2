"""Runs the real embedded model server as a subprocess for the tests in this directory."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
import pytest_asyncio

STARTUP_DEADLINE_S = 15.0
SHUTDOWN_DEADLINE_S = 10.0

# Loaded from CORRAL_EMBEDDED_MODEL_SCRIPT at start; runtime installs take precedence.
FILE_SCRIPT: dict[str, Any] = {
    "scenarios": [
        {
            "name": "from-file",
            "match": r"^file scenario\b",
            "turns": [{"content": [{"type": "text", "text": "Scripted from the startup file."}]}],
        }
    ]
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class EmbeddedModelServer:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def install(self, document: dict[str, Any]) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.base_url) as http:
            return await http.post("/_corral/scripts", json=document)

    async def recorded(self, scenario: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.base_url) as http:
            response = await http.get("/_corral/requests", params={"scenario": scenario})
        response.raise_for_status()
        requests: list[dict[str, Any]] = response.json()["requests"]
        return requests

    def stop(self) -> int:
        """SIGTERM the server by pid and return its exit code."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=SHUTDOWN_DEADLINE_S)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            return self.process.wait()


def start_server(workdir: Path, script: dict[str, Any] | None = None) -> EmbeddedModelServer:
    """Start ``python -m corral.embedded_model`` on a free port and wait for /health."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "CORRAL_EMBEDDED_MODEL_HOST": "127.0.0.1",
        "CORRAL_EMBEDDED_MODEL_PORT": str(port),
    }
    if script is not None:
        script_path = workdir / "script.json"
        script_path.write_text(json.dumps(script))
        env["CORRAL_EMBEDDED_MODEL_SCRIPT"] = str(script_path)
    log_path = workdir / "server.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "corral.embedded_model"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = EmbeddedModelServer(process=process, port=port, log_path=log_path)
    _wait_until_healthy(server)
    return server


def _wait_until_healthy(server: EmbeddedModelServer) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"embedded model exited early:\n{server.log()}")
        try:
            if httpx.get(f"{server.base_url}/health", timeout=0.5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.02)  # poll interval, bounded by the deadline above
    server.stop()
    raise RuntimeError(f"embedded model not healthy within {STARTUP_DEADLINE_S}s:\n{server.log()}")


@pytest.fixture(scope="module")
def embedded_model(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EmbeddedModelServer]:
    server = start_server(tmp_path_factory.mktemp("embedded-model"), FILE_SCRIPT)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_embedded_model(tmp_path: Path) -> Iterator[Callable[[], EmbeddedModelServer]]:
    """Start a private server (no script file); it is stopped at teardown if still running."""
    started: list[EmbeddedModelServer] = []

    def start() -> EmbeddedModelServer:
        server = start_server(tmp_path / f"server-{len(started)}")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest_asyncio.fixture
async def client(
    embedded_model: EmbeddedModelServer,
) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=embedded_model.base_url, api_key="test", max_retries=0) as sdk:
        yield sdk
