"""The NATS server config the launcher writes: durability setting and users."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from corral.contracts import subjects
from corral.devstack.configuration import DEFAULT_SYNC_INTERVAL, sync_interval
from corral.devstack.errors import DevstackError
from corral.devstack.nats import Nats
from corral.devstack.nats_accounts import CORRAL_ACCOUNT, SUBSCRIBERS_ACCOUNT, mirror_links, move_global_store
from corral.devstack.nats_users import ADMIN, SERVICE_USERS, SUBSCRIBER
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


def test_the_config_holds_the_interval_a_user_per_service_and_the_subscriber_in_its_own_account(
    tmp_path: Path,
) -> None:
    nats = Nats(StateDir.at(tmp_path), 4222, 8222, sync_interval="10s")
    config = nats.config()
    assert config["jetstream"] == {"sync_interval": "10s"}
    accounts = config["accounts"]
    assert isinstance(accounts, dict) and set(accounts) == {CORRAL_ACCOUNT, SUBSCRIBERS_ACCOUNT}
    corral, subscribers = accounts[CORRAL_ACCOUNT]["users"], accounts[SUBSCRIBERS_ACCOUNT]["users"]
    assert [u["user"] for u in corral] == [ADMIN, *SERVICE_USERS]
    assert [u["user"] for u in subscribers] == [SUBSCRIBER]
    users = [*corral, *subscribers]
    assert len({u["password"] for u in users}) == len(users)
    assert stat.S_IMODE(nats.state.nats_users_file.stat().st_mode) == 0o600
    assert Nats(StateDir.at(tmp_path), 4222, 8222).config()["accounts"] == accounts
    assert "accounts" not in Nats(StateDir.at(tmp_path), 4222, 8222, authorization=False).config()


def test_corral_exports_to_the_subscribers_only_what_the_mirrors_of_two_streams_need() -> None:
    corral, subscribers = mirror_links()
    exported = {str(e.get("service") or e.get("stream")) for e in corral["exports"]}  # type: ignore[attr-defined]
    assert exported == {
        *(f"$JS.API.CONSUMER.CREATE.{s}" for s in subjects.MIRRORED_STREAMS),
        *(f"$JS.FC.{s}.>" for s in subjects.MIRRORED_STREAMS),
        *(f"{subjects.mirror_delivery(s)}.>" for s in subjects.MIRRORED_STREAMS),
    }
    assert all(e["accounts"] == [SUBSCRIBERS_ACCOUNT] for e in corral["exports"])  # type: ignore[attr-defined]
    assert subscribers["exports"] == [{"service": "$JS.API.>", "accounts": [CORRAL_ACCOUNT]}]


def test_a_store_made_before_the_accounts_becomes_corrals(tmp_path: Path) -> None:
    (tmp_path / "jetstream" / "$G" / "streams" / "CORRAL_SESSIONS").mkdir(parents=True)
    move_global_store(tmp_path)
    assert (tmp_path / "jetstream" / CORRAL_ACCOUNT / "streams" / "CORRAL_SESSIONS").is_dir()
    assert not (tmp_path / "jetstream" / "$G").exists()
    move_global_store(tmp_path)  # once only
    assert (tmp_path / "jetstream" / CORRAL_ACCOUNT / "streams" / "CORRAL_SESSIONS").is_dir()
