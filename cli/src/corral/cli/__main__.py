"""``python -m corral.cli`` (or the ``corral`` console script)."""

from __future__ import annotations

from corral.cli.app import main

if __name__ == "__main__":
    main()
