"""The admin API's session-store requests and replies (``/v1/organizations/...``: workspaces and API
keys). Organisation-wide: no ``workspace_id`` scope; the gateway asks them only for keys with role
``admin``. The operations themselves are in ``corral.contracts.rpc.StoreOps``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from corral.contracts.api.admin import KeyStatus


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IssueApiKey(_Message):
    """``apikeys.issue``: a new key of ``params.workspace_id`` (an ``ApiKeyCreateParams`` dump). The
    gateway minted the key; only its hash and hint travel, and the key is shown to the client once."""

    key_sha256: str
    partial_key_hint: str
    params: dict[str, Any]


class AdminGet(_Message):
    """``workspaces.get`` / ``workspaces.archive`` / ``apikeys.get``."""

    id: str


class AdminUpdate(_Message):
    """``params`` holds only the fields the client sent (``rate_limit: null`` clears it)."""

    id: str
    params: dict[str, Any]


class AdminCreate(_Message):
    params: dict[str, Any]


class AdminList(_Message):
    """Admin API lists: ascending by creation, ``after_id`` / ``before_id`` cursors."""

    limit: int = Field(default=20, ge=1, le=1000)
    after_id: str | None = None
    before_id: str | None = None
    include_archived: bool = False
    # apikeys.list
    workspace_id: str | None = None
    status: KeyStatus | None = None


class AdminPage(_Message):
    """``{data, has_more, first_id, last_id}``, the Admin API's list shape."""

    data: list[dict[str, Any]]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None
