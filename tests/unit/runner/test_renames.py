"""One naming scheme: ``CORRAL_<SERVICE>_*`` for a service's own knobs, ``CORRAL_<DEPENDENCY>_*`` for
shared ones. Every renamed variable is read under its new name; its old name still works for one
release and is reported deprecated (the runner logs it as a warning); the new name wins over the old."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from corral.credential_proxy.settings import Settings as CredentialProxySettings
from corral.sandbox_manager.settings import Settings as SandboxManagerSettings
from corral.session_store.settings import Settings as SessionStoreSettings
from corral.settings import describe, renamed_in_use, variable_name, variables

#: (settings class, how to get the value from an instance, new name, old name, a value, another value)
RENAMES = [
    (SessionStoreSettings, lambda s: s.lease_ttl_s, "CORRAL_HARNESS_LEASE_TTL_S", "CORRAL_LEASE_TTL_S", "4", "3"),
    (
        SessionStoreSettings,
        lambda s: s.postgres.url,
        "CORRAL_POSTGRES_URL",
        "CORRAL_DATABASE_URL",
        "postgresql://o",
        "postgresql://n",
    ),
    (
        SessionStoreSettings,
        lambda s: s.state_cache_size,
        "CORRAL_SESSION_STORE_STATE_CACHE_SIZE",
        "CORRAL_STATE_CACHE_SIZE",
        "7",
        "8",
    ),
    (
        SessionStoreSettings,
        lambda s: s.events_page_bytes,
        "CORRAL_SESSION_STORE_EVENTS_PAGE_BYTES",
        "CORRAL_EVENTS_PAGE_BYTES",
        "1000",
        "2000",
    ),
    (
        SessionStoreSettings,
        lambda s: s.bootstrap_api_key.get_secret_value(),
        "CORRAL_SESSION_STORE_BOOTSTRAP_API_KEY",
        "CORRAL_BOOTSTRAP_API_KEY",
        "sk-old",
        "sk-new",
    ),
    (
        SessionStoreSettings,
        lambda s: s.bootstrap_workspace,
        "CORRAL_SESSION_STORE_BOOTSTRAP_WORKSPACE",
        "CORRAL_BOOTSTRAP_WORKSPACE",
        "w-old",
        "w-new",
    ),
    (
        CredentialProxySettings,
        lambda s: s.egress.ports,
        "CORRAL_CREDENTIAL_PROXY_EGRESS_PORTS",
        "CORRAL_EGRESS_PORTS",
        "[8080]",
        "[9090]",
    ),
    (
        CredentialProxySettings,
        lambda s: s.egress.grant_ttl_s,
        "CORRAL_CREDENTIAL_PROXY_EGRESS_GRANT_TTL_S",
        "CORRAL_EGRESS_GRANT_TTL_S",
        "60",
        "120",
    ),
    (
        CredentialProxySettings,
        lambda s: s.health_probe_timeout_s,
        "CORRAL_CREDENTIAL_PROXY_HEALTH_PROBE_TIMEOUT_S",
        "CORRAL_HEALTH_PROBE_TIMEOUT_S",
        "3",
        "4",
    ),
    (
        SandboxManagerSettings,
        lambda s: s.health_probe_timeout_s,
        "CORRAL_SANDBOX_HEALTH_PROBE_TIMEOUT_S",
        "CORRAL_HEALTH_PROBE_TIMEOUT_S",
        "3",
        "4",
    ),
    (
        SandboxManagerSettings,
        lambda s: s.engine_retry_s,
        "CORRAL_SANDBOX_ENGINE_RETRY_S",
        "CORRAL_ENGINE_RETRY_S",
        "6",
        "7",
    ),
]
IDS = [new for _, _, new, _, _, _ in RENAMES]


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for _, _, new, old, _, _ in RENAMES:
        monkeypatch.delenv(new, raising=False)
        monkeypatch.delenv(old, raising=False)
    # the session-store needs its database URL; the tests below set it themselves where it matters
    monkeypatch.setenv("CORRAL_POSTGRES_URL", "postgresql://corral@127.0.0.1:1/corral")


def _parsed(value: str) -> object:
    return tuple(int(p) for p in value.strip("[]").split(",")) if value.startswith("[") else value


def _same(got: object, raw: str) -> bool:
    wanted = _parsed(raw)
    if isinstance(got, int | float) and not isinstance(got, bool):
        return float(got) == float(raw)
    return got == wanted


@pytest.mark.parametrize(("settings", "get", "new", "old", "value", "other"), RENAMES, ids=IDS)
def test_the_new_name_is_read_and_is_the_documented_one(
    monkeypatch: pytest.MonkeyPatch, settings: type[BaseSettings], get, new: str, old: str, value: str, other: str
) -> None:
    monkeypatch.setenv(new, value)
    assert _same(get(settings()), value)
    assert new in {v.name for v in variables(settings)}
    assert all(o != old for o, _ in renamed_in_use())


@pytest.mark.parametrize(("settings", "get", "new", "old", "value", "other"), RENAMES, ids=IDS)
def test_the_old_name_still_works_and_is_reported_deprecated(
    monkeypatch: pytest.MonkeyPatch, settings: type[BaseSettings], get, new: str, old: str, value: str, other: str
) -> None:
    if new == "CORRAL_POSTGRES_URL":
        monkeypatch.delenv(new)
    monkeypatch.setenv(old, value)
    assert _same(get(settings()), value)
    assert (old, new) in renamed_in_use()


@pytest.mark.parametrize(("settings", "get", "new", "old", "value", "other"), RENAMES, ids=IDS)
def test_the_new_name_wins_over_the_old(
    monkeypatch: pytest.MonkeyPatch, settings: type[BaseSettings], get, new: str, old: str, value: str, other: str
) -> None:
    monkeypatch.setenv(old, value)
    monkeypatch.setenv(new, other)
    assert _same(get(settings()), other)


def test_a_renamed_field_is_documented_under_its_new_name() -> None:
    assert variable_name(SessionStoreSettings, "lease_ttl_s") == "CORRAL_HARNESS_LEASE_TTL_S"
    assert variable_name(SandboxManagerSettings, "engine_retry_s") == "CORRAL_SANDBOX_ENGINE_RETRY_S"


@pytest.mark.parametrize(
    ("variable", "shown"),
    [
        ("CORRAL_SESSION_STORE_STATE_CACHE_SIZE", "CORRAL_SESSION_STORE_STATE_CACHE_SIZE: "),
        (
            "CORRAL_STATE_CACHE_SIZE",
            "CORRAL_STATE_CACHE_SIZE (deprecated: now CORRAL_SESSION_STORE_STATE_CACHE_SIZE): ",
        ),
    ],
)
def test_a_settings_error_names_the_variable_set_under_either_name(
    monkeypatch: pytest.MonkeyPatch, variable: str, shown: str
) -> None:
    monkeypatch.setenv(variable, "0")
    with pytest.raises(ValidationError) as caught:
        SessionStoreSettings()
    assert describe(caught.value, SessionStoreSettings).startswith(shown)
