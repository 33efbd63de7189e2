"""Where ``corral`` finds Corral: options and environment first, then the nearest ``.corral/env``."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.cli.admin import admin_key_file
from corral.cli.connection import Connection
from corral.cli.failure import Failure


def checkout(tmp_path: Path) -> Path:
    """A directory like a checkout after ``make up``, and a directory below it."""
    (tmp_path / ".corral").mkdir()
    (tmp_path / ".corral" / "env").write_text(
        "# written by make up\nANTHROPIC_BASE_URL=http://127.0.0.1:8080/\nexport ANTHROPIC_API_KEY='sk-corral-dev-x'\n"
    )
    (tmp_path / ".corral" / "admin-key").write_text("sk-corral-admin-y\n")
    below = tmp_path / "agents" / "team"
    below.mkdir(parents=True)
    return below


def test_the_nearest_corral_env_is_read_from_below_it(tmp_path: Path) -> None:
    below = checkout(tmp_path)
    assert Connection.resolve(None, None, cwd=below) == Connection("http://127.0.0.1:8080", "sk-corral-dev-x")
    assert admin_key_file(below) == "sk-corral-admin-y"


def test_options_and_environment_win_over_the_file(tmp_path: Path) -> None:
    below = checkout(tmp_path)
    assert Connection.resolve("http://corral:9000", None, cwd=below) == Connection(
        "http://corral:9000", "sk-corral-dev-x"
    )
    assert Connection.resolve(None, "sk-other", cwd=below).api_key == "sk-other"


def test_nothing_configured_says_how_to_configure(tmp_path: Path) -> None:
    with pytest.raises(Failure) as raised:
        Connection.resolve(None, None, cwd=tmp_path)
    assert "ANTHROPIC_BASE_URL" in raised.value.message and "make up" in raised.value.message
    with pytest.raises(Failure) as raised:
        Connection.resolve("http://corral:9000", None, cwd=tmp_path)
    assert "ANTHROPIC_API_KEY" in raised.value.message
    assert admin_key_file(tmp_path) is None
