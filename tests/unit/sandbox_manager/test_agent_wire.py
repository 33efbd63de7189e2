"""The exec agent as a process: JSON lines on stdin/stdout, ``ping``, concurrent requests, ``cancel``.

It is started exactly as in a container (``python3 -c <source> <config>``), in a temporary root.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.sandbox_manager.agent import source


class Agent:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def send(self, request: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the agent closed its stdout"
        reply: dict[str, Any] = json.loads(line)
        return reply


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    config = json.dumps({"root": str(tmp_path), "output_limit": 5000, "default_timeout_ms": 20_000})
    proc = subprocess.Popen([sys.executable, "-c", source(), config], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        yield Agent(proc)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


def test_the_agent_answers_ping_and_tool_requests_by_id(agent: Agent, tmp_path: Path) -> None:
    agent.send({"id": 1, "tool": "ping"})
    pong = agent.receive()
    assert (pong["id"], pong["content"], pong["is_error"], pong["protocol"], pong["sealed"]) == (
        1,
        [{"type": "text", "text": "pong"}],
        False,
        1,
        True,  # non-dumpable: tools cannot open its stdio through /proc (see the integration tests)
    )
    agent.send({"id": 2, "tool": "write", "input": {"file_path": "x.txt", "content": "hi"}})
    assert agent.receive() == {
        "id": 2,
        "content": [{"type": "text", "text": f"wrote 2 bytes to {tmp_path}/x.txt"}],
        "is_error": False,
    }


def test_a_long_command_does_not_block_other_tools_and_can_be_cancelled(agent: Agent, tmp_path: Path) -> None:
    agent.send({"id": "slow", "tool": "bash", "input": {"command": "echo begun; : > started; sleep 30"}})
    agent.send({"id": "quick", "tool": "read", "input": {"file_path": "missing.txt"}})
    quick = agent.receive()
    assert quick["id"] == "quick" and quick["is_error"]
    deadline = time.monotonic() + 20
    while not (tmp_path / "started").exists():  # cancel once the command has printed, not before
        assert time.monotonic() < deadline, "the slow command never started"
        time.sleep(0.01)
    agent.send({"id": "stop", "tool": "cancel", "input": {"target": "slow"}})
    replies = {r["id"]: r for r in (agent.receive(), agent.receive())}
    assert replies["stop"]["content"][0]["text"] == "cancelled"
    slow = replies["slow"]
    assert slow["is_error"] and slow["content"][0]["text"].startswith("begun\n[cancelled: the command was stopped")


def test_an_unreadable_request_gets_an_error_reply_and_the_agent_goes_on(agent: Agent) -> None:
    agent.send({"id": 1, "tool": "ping"})
    agent.receive()
    assert agent.proc.stdin is not None
    agent.proc.stdin.write(b"not json\n")
    agent.proc.stdin.flush()
    bad = agent.receive()
    assert bad["id"] is None and bad["is_error"]
    agent.send({"id": 3, "tool": "bash", "input": {"command": "echo fine"}})
    assert agent.receive()["content"][0]["text"] == "fine\n"
