"""API keys: resolve a key hash to its workspace; register keys."""

from __future__ import annotations

import logging

from corral.contracts import ids, subjects
from corral.contracts.api.errors import ApiError
from corral.contracts.clock import now_rfc3339
from corral.contracts.log import ApiKeyCreated
from corral.contracts.rpc import CreateApiKey, ResolvedKey, ResolveKey
from corral.session_store.db import UNAVAILABLE
from corral.session_store.service import Deps

logger = logging.getLogger(__name__)


_UNKNOWN_KEY = "invalid API key; send a Corral API key as x-api-key or Authorization: Bearer"


async def resolve(deps: Deps, req: ResolveKey) -> ResolvedKey:
    try:
        row = await deps.pool.fetchrow(
            "SELECT key_id, workspace_id FROM api_keys WHERE key_sha256 = $1", req.key_sha256
        )
    except UNAVAILABLE as exc:
        # Postgres is only a projection, and every request is authenticated: read the key from the log.
        logger.warning(
            "projection unavailable; resolving the API key from the log",
            extra={"fields": {"error": type(exc).__name__}},
        )
        record = await deps.catalog.api_key(req.key_sha256)
        if record is None:
            raise ApiError("authentication_error", _UNKNOWN_KEY) from None
        return ResolvedKey(workspace_id=record.workspace_id, key_id=record.key_id)
    if row is None:
        raise ApiError("authentication_error", _UNKNOWN_KEY)
    return ResolvedKey(workspace_id=row["workspace_id"], key_id=row["key_id"])


async def create(deps: Deps, req: CreateApiKey) -> ResolvedKey:
    """Register a key by hash; registering the same hash again returns the existing key."""
    row = await deps.pool.fetchrow("SELECT key_id, workspace_id FROM api_keys WHERE key_sha256 = $1", req.key_sha256)
    if row is not None:
        return ResolvedKey(workspace_id=row["workspace_id"], key_id=row["key_id"])
    key_id = ids.new_id(ids.API_KEY)
    record = ApiKeyCreated(
        workspace_id=req.workspace_id, key_id=key_id, key_sha256=req.key_sha256, name=req.name, created_at=now_rfc3339()
    )
    seq = await deps.catalog.append(
        subjects.api_key_log(key_id),
        record.model_dump(mode="json"),
        expected_last_seq=None,
        msg_id=f"apikey:{req.key_sha256}",
    )
    await deps.caught_up_catalog(seq)
    return await resolve(deps, ResolveKey(key_sha256=req.key_sha256))
