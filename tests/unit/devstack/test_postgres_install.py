"""The embedded Postgres install is reachable by the server's system user wherever the checkout is."""

from __future__ import annotations

import stat
from pathlib import Path

from corral.devstack.postgres_tools import ensure_binaries_readable


def test_a_private_directory_above_an_already_readable_install_is_made_traversable(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"  # e.g. a clone in a mktemp -d directory or a 0700 home
    bin_dir = checkout / "venv" / "pginstall" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "postgres").write_text("")
    (bin_dir / "postgres").chmod(0o755)  # the files themselves are readable already
    checkout.chmod(0o700)

    ensure_binaries_readable(bin_dir)

    assert checkout.stat().st_mode & stat.S_IXOTH
    assert not checkout.stat().st_mode & stat.S_IROTH  # traversable, not listable
