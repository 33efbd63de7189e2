"""The README's SDK example runs as written against a Corral stack."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from corral.devstack.stack import Stack

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_sdk_example_runs_unchanged(stack: Stack) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README lost its SDK example"
    result = subprocess.run(
        [sys.executable, "-c", blocks[0]],
        env={"PATH": "/usr/bin:/bin", **stack.client_env()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    printed = result.stdout.split()
    assert printed[0] == "user.message" and printed[-1] == "session.status_idle"
    assert "agent.message" in printed
