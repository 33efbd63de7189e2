"""A service started against a NATS whose streams or buckets differ from what it requires: it must
refuse to start, in one line that says what differs, with no traceback."""

from __future__ import annotations

import os
import subprocess
import sys


def refusal(service: str, nats_url: str, env: dict[str, str]) -> tuple[str, str]:
    """Run ``corral.<service>`` against ``nats_url`` with ``env`` over a clean environment; its one
    "refused to start" line and its whole output, once it has exited 2 with no traceback."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "ANTHROPIC_", "OTEL_"))}
    result = subprocess.run(
        [sys.executable, "-m", f"corral.{service}"],
        env=clean | {"CORRAL_NATS_URL": nats_url, "CORRAL_LOG_FORMAT": "text", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    refusals = [line for line in output.splitlines() if "refused to start" in line]
    assert len(refusals) == 1, output
    assert "Traceback" not in output and "Application startup failed" not in output, output
    return refusals[0], output
