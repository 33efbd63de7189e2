"""`make demo`'s script runs against a stack and shows an agent writing and running code."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from corral.devstack.stack import Stack

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


async def test_the_demo_writes_and_runs_code_in_the_sandbox(stack: Stack, model: httpx.AsyncClient) -> None:
    script = json.loads((ROOT / "infra" / "dev" / "demo-script.json").read_text())
    assert (await model.post("/_corral/scripts", json=script)).status_code == 200
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(ROOT / "infra" / "dev" / "demo.py")],
        env={"PATH": "/usr/bin:/bin", **stack.client_env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "agent.tool_use" in out and "write" in out
    assert "(ok): 2 3 5 7 11 13 17 19 23 29" in out  # the script really ran in the sandbox
    assert "stop_reason=end_turn" in out
    assert "is idle" in out
