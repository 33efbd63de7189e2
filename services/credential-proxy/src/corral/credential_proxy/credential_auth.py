"""A credential's ``auth``: its public form from create params, and an update applied to it. Pure.

Secret parts are never part of the public form; they come back separately, as the document kept in
OpenBao (``corral.contracts.api.vaults.split_secrets``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from corral.contracts.api.errors import invalid
from corral.contracts.api.vaults import (
    SECRET_MAX_BYTES,
    SECRET_TOO_LARGE,
    EnvironmentVariableCreateParams,
    EnvironmentVariableUpdateParams,
    McpOAuthCreateParams,
    McpOAuthUpdateParams,
    StaticBearerCreateParams,
    StaticBearerUpdateParams,
    secret_size,
    split_secrets,
)
from corral.contracts.clock import parse_rfc3339, rfc3339


def _expiry(value: str | None, now: datetime, where: str) -> str | None:
    if value is None:
        return None
    try:
        when = parse_rfc3339(value)
    except ValueError:
        raise invalid(f"{where}: {value!r} is not an RFC 3339 timestamp (e.g. 2030-01-01T00:00:00Z)") from None
    if when <= now:
        raise invalid(f"{where}: must be in the future")
    return rfc3339(when)


def _injection(header: bool | None, body: bool | None, current: dict[str, Any] | None) -> dict[str, bool]:
    base = current or {"header": True, "body": False}
    resolved = {
        "header": base["header"] if header is None else header,
        "body": base["body"] if body is None else body,
    }
    if not (resolved["header"] or resolved["body"]):
        raise invalid("auth.injection_location: at least one of header and body must be true")
    return resolved


def create_auth(
    auth: McpOAuthCreateParams | StaticBearerCreateParams | EnvironmentVariableCreateParams, *, now: datetime
) -> tuple[dict[str, Any], dict[str, str]]:
    """The public ``auth`` a new credential returns, and its secret document."""
    _, secrets = split_secrets(auth)
    stored = {k: v for k, v in secrets.items() if v}
    if isinstance(auth, StaticBearerCreateParams):
        return {"type": "static_bearer", "mcp_server_url": auth.mcp_server_url}, stored
    if isinstance(auth, McpOAuthCreateParams):
        refresh = None
        if auth.refresh is not None:
            refresh = {
                "client_id": auth.refresh.client_id,
                "token_endpoint": auth.refresh.token_endpoint,
                "token_endpoint_auth": {"type": auth.refresh.token_endpoint_auth.type},
                "scope": auth.refresh.scope,
                "resource": auth.refresh.resource,
            }
        public: dict[str, Any] = {
            "type": "mcp_oauth",
            "mcp_server_url": auth.mcp_server_url,
            "expires_at": _expiry(auth.expires_at, now, "auth.expires_at"),
            "refresh": refresh,
        }
        return public, stored
    location = auth.injection_location
    env_public: dict[str, Any] = {
        "type": "environment_variable",
        "secret_name": auth.secret_name,
        "networking": auth.networking.model_dump(mode="json"),
        "injection_location": _injection(
            location.header if location else None, location.body if location else None, None
        ),
    }
    return env_public, stored


def update_auth(
    current: dict[str, Any],
    secret: dict[str, str],
    auth: McpOAuthUpdateParams | StaticBearerUpdateParams | EnvironmentVariableUpdateParams,
    *,
    now: datetime,
) -> tuple[dict[str, Any], dict[str, str]]:
    """``current`` (public) and ``secret`` (stored) with ``auth`` applied: the new public ``auth`` and
    the new secret document (equal to ``secret`` when no secret part changed)."""
    if auth.type != current.get("type"):
        raise invalid(
            f"auth.type: this credential is {current.get('type')!r} and cannot become {auth.type!r}; a credential's "
            "type is fixed when it is created, so create a new credential",
            error_code="invalid_credential_type_change",
        )
    sent = auth.model_dump(mode="json", exclude_unset=True)
    _, changes = split_secrets(auth)
    public = dict(current)
    new_secret = dict(secret)
    for name, value in changes.items():
        if value is not None:
            new_secret[name] = value
    if isinstance(auth, McpOAuthUpdateParams):
        if "expires_at" in sent:
            public["expires_at"] = _expiry(auth.expires_at, now, "auth.expires_at")
        if "refresh" in sent:
            if auth.refresh is None:
                public["refresh"] = None
                new_secret.pop("refresh_token", None)
                new_secret.pop("client_secret", None)
            else:
                public["refresh"] = _update_refresh(current.get("refresh"), auth, sent["refresh"])
    elif isinstance(auth, EnvironmentVariableUpdateParams):
        if "networking" in sent and auth.networking is not None:
            public["networking"] = auth.networking.model_dump(mode="json")
        if auth.injection_location is not None:
            public["injection_location"] = _injection(
                auth.injection_location.header, auth.injection_location.body, current.get("injection_location")
            )
    size = secret_size(dict(new_secret))
    if size > SECRET_MAX_BYTES:
        raise invalid(
            f"auth: the credential's secret parts would be {size} bytes together, more than the {SECRET_MAX_BYTES} "
            "bytes a credential may hold; store a shorter secret",
            error_code=SECRET_TOO_LARGE,
        )
    return public, new_secret


def _update_refresh(current: Any, auth: McpOAuthUpdateParams, sent: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(current, dict):
        raise invalid(
            "auth.refresh: this credential has no refresh configuration to update (its client_id and "
            "token_endpoint are fixed at creation); create a new credential with refresh"
        )
    refresh = dict(current)
    assert auth.refresh is not None
    if "scope" in sent:
        refresh["scope"] = auth.refresh.scope or None
    endpoint_auth = auth.refresh.token_endpoint_auth
    if endpoint_auth is not None:
        kind = (current.get("token_endpoint_auth") or {}).get("type")
        if kind not in ("client_secret_basic", "client_secret_post"):
            raise invalid(
                "auth.refresh.token_endpoint_auth: this credential's token endpoint takes no client secret "
                f"(its token_endpoint_auth is {kind!r}); create a new credential to use one"
            )
    return refresh
