"""The NATS server config the launcher writes: durability setting and users."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from corral.devstack.configuration import DEFAULT_SYNC_INTERVAL, sync_interval
from corral.devstack.errors import DevstackError
from corral.devstack.nats import Nats
from corral.devstack.nats_users import ADMIN, SERVICE_USERS
from corral.devstack.state import StateDir


@pytest.mark.parametrize("raw", ["always", "500ms", "10s", "2m", "1h", " always "])
def test_a_sync_interval_is_always_or_a_duration(raw: str) -> None:
    assert sync_interval(raw) == raw.strip()


@pytest.mark.parametrize("raw", ["never", "10", "0s", "-1s", "2 m", "fast"])
def test_a_bad_sync_interval_names_the_variable(raw: str) -> None:
    with pytest.raises(DevstackError, match="CORRAL_NATS_SYNC_INTERVAL"):
        sync_interval(raw)


def test_the_default_syncs_every_write() -> None:
    assert sync_interval(None) == sync_interval("") == DEFAULT_SYNC_INTERVAL == "always"


def test_the_config_holds_the_interval_and_a_user_per_service(tmp_path: Path) -> None:
    nats = Nats(StateDir.at(tmp_path), 4222, 8222, sync_interval="10s")
    config = nats.config()
    assert config["jetstream"] == {"sync_interval": "10s"}
    users = config["authorization"]["users"]  # type: ignore[index]
    assert [u["user"] for u in users] == [ADMIN, *SERVICE_USERS]
    assert len({u["password"] for u in users}) == len(users)
    assert stat.S_IMODE(nats.state.nats_users_file.stat().st_mode) == 0o600
    assert Nats(StateDir.at(tmp_path), 4222, 8222).config()["authorization"] == config["authorization"]
    assert "authorization" not in Nats(StateDir.at(tmp_path), 4222, 8222, authorization=False).config()
