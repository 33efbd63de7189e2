"""The credential-proxy starts without the libraries only some sessions need: the ``mcp`` SDK (the
first MCP call loads it), ``cryptography`` (the first credential-bound egress authority) and the HTML
converter (the first page fetched). Together ~30 MiB of PSS in a proxy that serves none of them."""

from __future__ import annotations

import subprocess
import sys

ON_DEMAND = ("mcp", "mcp_types", "cryptography", "bs4", "markdownify")

PROBE = """
import sys
import corral.credential_proxy.__main__
print(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:])))
"""


def test_starting_the_proxy_loads_no_library_only_some_sessions_need() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *ON_DEMAND], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stderr


def test_starting_the_proxy_loads_no_http_command_line_tool() -> None:
    """``httpx`` imports its CLI (``rich``, ``pygments``, ``click``: ~9 MiB) whenever they are
    installed; web search uses ``httpx2``, which does not."""
    cli = ("httpx", "rich", "pygments", "click")
    out = subprocess.run([sys.executable, "-c", PROBE, *cli], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stderr
