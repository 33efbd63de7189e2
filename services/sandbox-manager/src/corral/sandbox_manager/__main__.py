"""sandbox-manager: turns environments into hardened Docker containers and runs the built-in tools in them.

``python -m corral.sandbox_manager`` (or ``corral-sandbox-manager``); the composition root is
``corral.sandbox_manager.composition``, started by ``corral.runner``.
"""

from __future__ import annotations

from corral.runner import run
from corral.sandbox_manager.composition import serve
from corral.sandbox_manager.settings import Settings


def main() -> None:
    run("sandbox-manager", Settings, serve)


if __name__ == "__main__":
    main()
