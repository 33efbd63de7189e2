"""The exec agent, a standard-library Python program run inside every sandbox (see ``program``).

The sandbox-manager never imports it to run it: ``source()`` gives its text, which becomes the
container's command (``python3 -c <source> <config>``), so nothing is copied into the read-only
image and no host path is mounted.
"""

from __future__ import annotations

from importlib import resources


def source() -> str:
    return resources.files(__package__).joinpath("program.py").read_text(encoding="utf-8")
