"""One variable per fact: the session-store reads the harness's lease TTL; the old name still works."""

from __future__ import annotations

import pytest

from corral.session_store.settings import Settings
from corral.settings import renamed_in_use, variable_name


@pytest.fixture(autouse=True)
def database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_DATABASE_URL", "postgresql://corral@127.0.0.1:1/corral")
    monkeypatch.delenv("CORRAL_HARNESS_LEASE_TTL_S", raising=False)
    monkeypatch.delenv("CORRAL_LEASE_TTL_S", raising=False)


def test_the_lease_ttl_is_the_harness_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_HARNESS_LEASE_TTL_S", "3")
    assert Settings().lease_ttl_s == 3
    assert variable_name(Settings, "lease_ttl_s") == "CORRAL_HARNESS_LEASE_TTL_S"
    assert renamed_in_use() == []


def test_the_old_name_still_works_and_is_reported_deprecated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_LEASE_TTL_S", "4")
    assert Settings().lease_ttl_s == 4
    assert ("CORRAL_LEASE_TTL_S", "CORRAL_HARNESS_LEASE_TTL_S") in renamed_in_use()


def test_the_new_name_wins_over_the_old(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_LEASE_TTL_S", "4")
    monkeypatch.setenv("CORRAL_HARNESS_LEASE_TTL_S", "3")
    assert Settings().lease_ttl_s == 3
