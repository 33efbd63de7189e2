"""Entry point: ``python -m corral.gateway`` (or ``corral-gateway``); the composition root is
``corral.gateway.composition``, started by ``corral.runner`` (uvicorn runs inside it, its own signal
handling off: SIGTERM or SIGINT stops the gateway gracefully, exit status 0)."""

from __future__ import annotations

from corral.gateway.composition import serve
from corral.gateway.settings import Settings
from corral.runner import run


def main() -> None:
    run("gateway", Settings, serve, grace_s=lambda settings: settings.shutdown_grace_s + 15.0)


if __name__ == "__main__":
    main()
