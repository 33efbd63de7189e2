"""Administration: workspaces and API keys (``/v1/organizations/...``).

The shapes follow the Anthropic Admin API (``/v1/organizations/workspaces``,
``/v1/organizations/api_keys``): a workspace ``{id, type: "workspace", name, created_at,
archived_at, display_color}``, an API key ``{id, type: "api_key", name, workspace_id, created_at,
partial_key_hint, status}`` whose ``status`` is ``active``, ``inactive`` (suspended: reversible) or
``archived`` (revoked: permanent), and lists ``{data, has_more, first_id, last_id}`` paged with
``after_id`` / ``before_id``. Corral adds what the hosted API does elsewhere: creating a key
(``POST /v1/organizations/api_keys``, whose answer holds the key itself once), a key's ``role``
(``user``, or ``admin``: may also call these endpoints) and its ``rate_limit``.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field, StringConstraints

from corral.contracts.api.base import Request, Resource

KeyStatus = Literal["active", "inactive", "archived"]
KeyRole = Literal["user", "admin"]
WorkspaceName = Annotated[str, StringConstraints(min_length=1, max_length=40)]
KeyName = Annotated[str, StringConstraints(min_length=1, max_length=500)]
DisplayColor = Annotated[str, StringConstraints(pattern=r"^#[0-9a-fA-F]{6}$")]

DEFAULT_DISPLAY_COLOR: Final = "#6C5BB9"
KEY_PREFIX: Final = "sk-corral-api-"
"""What every key the admin API mints starts with."""


class RateLimit(Resource):
    """A key's own rate limit, instead of the gateway's defaults (``CORRAL_GATEWAY_RATE_LIMIT_*``)."""

    requests_per_second: float = Field(gt=0, le=1_000_000)
    burst: int = Field(ge=1, le=1_000_000)


class RateLimitParams(Request):
    requests_per_second: float = Field(gt=0, le=1_000_000)
    burst: int = Field(ge=1, le=1_000_000)


# --- workspaces ------------------------------------------------------------------------------------------
class WorkspaceCreateParams(Request):
    name: WorkspaceName
    display_color: DisplayColor | None = None


class WorkspaceUpdateParams(Request):
    name: WorkspaceName | None = None
    display_color: DisplayColor | None = None


class Workspace(Resource):
    type: Literal["workspace"] = "workspace"
    id: str
    name: str
    created_at: str
    archived_at: str | None = None
    display_color: str = DEFAULT_DISPLAY_COLOR


# --- API keys ---------------------------------------------------------------------------------------------
class ApiKeyCreateParams(Request):
    name: KeyName
    workspace_id: str = Field(min_length=1, max_length=128)
    role: KeyRole = "user"
    rate_limit: RateLimitParams | None = None


class ApiKeyUpdateParams(Request):
    """Only what is sent changes; ``rate_limit: null`` returns the key to the gateway's defaults."""

    name: KeyName | None = None
    status: KeyStatus | None = None
    rate_limit: RateLimitParams | None = None


class ApiKey(Resource):
    type: Literal["api_key"] = "api_key"
    id: str
    name: str
    workspace_id: str
    created_at: str
    partial_key_hint: str | None = None
    status: KeyStatus = "active"
    role: KeyRole = "user"
    rate_limit: RateLimit | None = None


def key_hint(key: str) -> str:
    """What a listing shows of a key: its prefix and last four characters (``sk-corral-api-ab...wxyz``)."""
    return f"{key[: len(KEY_PREFIX) + 2]}...{key[-4:]}"


def key_refusal(key: ApiKey) -> str | None:
    """Why a key that exists may not be used (suspended or revoked), or ``None`` when it may."""
    if key.status == "active":
        return None
    what = "revoked" if key.status == "archived" else "suspended (inactive)"
    return f"this API key was {what} by an administrator; ask one for another key"
