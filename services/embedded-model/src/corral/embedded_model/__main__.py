"""Entry point: ``python -m corral.embedded_model`` (or ``corral-embedded-model``); the composition
root is ``corral.embedded_model.composition``, started by ``corral.runner``."""

from __future__ import annotations

from corral.embedded_model.composition import serve
from corral.embedded_model.settings import Settings
from corral.runner import run


def main() -> None:
    run("embedded-model", Settings, serve)


if __name__ == "__main__":
    main()
