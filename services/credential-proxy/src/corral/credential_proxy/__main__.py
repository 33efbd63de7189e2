"""credential-proxy: the only process that can read OpenBao, and the sandboxes' only way out.

``python -m corral.credential_proxy`` (or ``corral-credential-proxy``); the composition root is
``corral.credential_proxy.composition``, started by ``corral.runner``. MCP and git proxying arrive
with the vault work.
"""

from __future__ import annotations

from corral.credential_proxy.composition import serve
from corral.credential_proxy.settings import Settings
from corral.runner import run


def main() -> None:
    run("credential-proxy", Settings, serve, event_loop="asyncio")


if __name__ == "__main__":
    main()
