"""session-store: the sole writer of the session log, and the owner of the Postgres projections.

``python -m corral.session_store`` (or ``corral-session-store``); the composition root is
``corral.session_store.composition``, started by ``corral.runner``.
"""

from __future__ import annotations

from corral.runner import run
from corral.session_store.composition import serve
from corral.session_store.settings import Settings


def main() -> None:
    run("session-store", Settings, serve)


if __name__ == "__main__":
    main()
