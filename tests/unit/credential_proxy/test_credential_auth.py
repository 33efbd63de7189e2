"""A credential's public ``auth`` and its secret document: which fields are secret, and updates."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import TypeAdapter

from corral.contracts.api.errors import ApiError
from corral.contracts.api.vaults import (
    SECRET_MAX_BYTES,
    AuthCreateParams,
    AuthUpdateParams,
    CredentialCreateParams,
    check_secret_size,
)
from corral.credential_proxy.credential_auth import create_auth, update_auth

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CREATE: TypeAdapter[AuthCreateParams] = TypeAdapter(AuthCreateParams)
UPDATE: TypeAdapter[AuthUpdateParams] = TypeAdapter(AuthUpdateParams)

OAUTH = {
    "type": "mcp_oauth",
    "mcp_server_url": "https://m.example/mcp",
    "access_token": "AT",
    "expires_at": "2026-01-01T01:00:00Z",
    "refresh": {
        "refresh_token": "RT",
        "client_id": "c",
        "token_endpoint": "https://a.example/token",
        "token_endpoint_auth": {"type": "client_secret_basic", "client_secret": "CS"},
        "scope": "read",
    },
}


def test_every_secret_part_goes_to_the_secret_document_and_none_to_the_public_auth() -> None:
    public, secret = create_auth(CREATE.validate_python(OAUTH), now=NOW)
    assert secret == {"access_token": "AT", "refresh_token": "RT", "client_secret": "CS"}
    assert public == {
        "type": "mcp_oauth",
        "mcp_server_url": "https://m.example/mcp",
        "expires_at": "2026-01-01T01:00:00.000000Z",
        "refresh": {
            "client_id": "c",
            "token_endpoint": "https://a.example/token",
            "token_endpoint_auth": {"type": "client_secret_basic"},
            "scope": "read",
            "resource": None,
        },
    }
    env = {
        "type": "environment_variable",
        "secret_name": "K",
        "secret_value": "V",
        "networking": {"type": "unrestricted"},
    }
    public, secret = create_auth(CREATE.validate_python(env), now=NOW)
    assert secret == {"secret_value": "V"} and "V" not in str(public)
    assert public["injection_location"] == {"header": True, "body": False}


def test_an_update_changes_only_what_it_sends_and_keeps_the_type() -> None:
    public, secret = create_auth(CREATE.validate_python(OAUTH), now=NOW)
    change = UPDATE.validate_python({"type": "mcp_oauth", "access_token": "AT2", "refresh": {"scope": ""}})
    new_public, new_secret = update_auth(public, secret, change, now=NOW)
    assert new_secret == {"access_token": "AT2", "refresh_token": "RT", "client_secret": "CS"}
    assert new_public["refresh"]["scope"] is None and new_public["expires_at"] == public["expires_at"]
    dropped, without = update_auth(
        public, secret, UPDATE.validate_python({"type": "mcp_oauth", "refresh": None}), now=NOW
    )
    assert dropped["refresh"] is None and without == {"access_token": "AT"}
    with pytest.raises(ApiError, match="cannot become") as exc:
        update_auth(public, secret, UPDATE.validate_python({"type": "static_bearer", "token": "x"}), now=NOW)
    assert exc.value.error_code == "invalid_credential_type_change"
    with pytest.raises(ApiError, match="must be in the future"):
        update_auth(
            public, secret, UPDATE.validate_python({"type": "mcp_oauth", "expires_at": "2020-01-01T00:00:00Z"}), now=NOW
        )


def test_a_secret_over_the_limit_is_refused_with_its_code_and_without_its_value() -> None:
    params = CredentialCreateParams.model_validate(
        {
            "auth": {
                "type": "static_bearer",
                "mcp_server_url": "https://m.example",
                "token": "z" * (SECRET_MAX_BYTES + 1),
            }
        }
    )
    with pytest.raises(ApiError) as exc:
        check_secret_size(params.auth)
    assert exc.value.error_code == "credential_secret_too_large" and "zzz" not in exc.value.message
    check_secret_size(CredentialCreateParams.model_validate({"auth": OAUTH}).auth)


def test_neither_injection_location_is_refused() -> None:
    env = {
        "type": "environment_variable",
        "secret_name": "K",
        "secret_value": "V",
        "networking": {"type": "limited", "allowed_hosts": ["api.example.com"]},
        "injection_location": {"header": False},
    }
    with pytest.raises(ApiError, match="at least one"):
        create_auth(CREATE.validate_python(env), now=NOW)
