"""The credential-proxy's OpenBao settings: the new ``CORRAL_OPENBAO_*`` names, the old
``CORRAL_VAULT_*`` ones still read for a release (and reported), one way to log in."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from corral.credential_proxy.settings import OpenBaoSettings, Settings
from corral.settings import describe, renamed_in_use, variable_name

NAMES = ("ADDR", "TOKEN", "ROLE_ID", "SECRET_ID")


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NAMES:
        monkeypatch.delenv(f"CORRAL_OPENBAO_{name}", raising=False)
        monkeypatch.delenv(f"CORRAL_VAULT_{name}", raising=False)


def test_the_variables_are_named_openbao() -> None:
    assert [variable_name(OpenBaoSettings, f) for f in ("addr", "token", "role_id", "secret_id")] == [
        f"CORRAL_OPENBAO_{name}" for name in NAMES
    ]


def test_an_approle_login_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_OPENBAO_ADDR", "http://127.0.0.1:9200")
    monkeypatch.setenv("CORRAL_OPENBAO_ROLE_ID", "role")
    monkeypatch.setenv("CORRAL_OPENBAO_SECRET_ID", "s3cr3t-value")
    openbao = Settings().openbao
    assert (openbao.addr, openbao.role_id, openbao.token) == ("http://127.0.0.1:9200", "role", None)
    assert openbao.secret_id is not None and openbao.secret_id.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(openbao)
    assert renamed_in_use() == []


def test_the_old_vault_names_still_work_and_are_reported_deprecated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_VAULT_ADDR", "http://127.0.0.1:9300")
    monkeypatch.setenv("CORRAL_VAULT_TOKEN", "s.old")
    openbao = Settings().openbao
    assert openbao.addr == "http://127.0.0.1:9300"
    assert openbao.token is not None and openbao.token.get_secret_value() == "s.old"
    in_use = renamed_in_use()
    assert ("CORRAL_VAULT_ADDR", "CORRAL_OPENBAO_ADDR") in in_use
    assert ("CORRAL_VAULT_TOKEN", "CORRAL_OPENBAO_TOKEN") in in_use
    monkeypatch.setenv("CORRAL_OPENBAO_ADDR", "http://127.0.0.1:9200")
    assert Settings().openbao.addr == "http://127.0.0.1:9200"  # the new name wins


@pytest.mark.parametrize(
    "env",
    [
        {"CORRAL_OPENBAO_ROLE_ID": "role"},
        {"CORRAL_OPENBAO_SECRET_ID": "secret"},
        {"CORRAL_OPENBAO_ROLE_ID": "role", "CORRAL_OPENBAO_SECRET_ID": "secret", "CORRAL_OPENBAO_TOKEN": "s.x"},
    ],
)
def test_half_a_login_or_two_logins_are_refused_naming_the_variables(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = describe(caught.value, Settings)
    assert "CORRAL_OPENBAO_ROLE_ID" in message and "s.x" not in message
