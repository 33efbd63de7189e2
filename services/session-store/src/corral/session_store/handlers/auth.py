"""API keys: resolve a key hash to its workspace, role and rate limit (refusing suspended and revoked
keys); register the bootstrap keys."""

from __future__ import annotations

import logging

from corral.contracts import ids, subjects
from corral.contracts.api.admin import ApiKey, key_refusal
from corral.contracts.api.errors import ApiError
from corral.contracts.clock import now_rfc3339
from corral.contracts.log import ApiKeyCreated
from corral.contracts.rpc import CreateApiKey, ResolvedKey, ResolveKey
from corral.session_store.catalog_projection import api_key_of_row
from corral.session_store.db import UNAVAILABLE
from corral.session_store.service import Deps

logger = logging.getLogger(__name__)


_UNKNOWN_KEY = "invalid API key; send a Corral API key as x-api-key or Authorization: Bearer"


def resolved(key: ApiKey) -> ResolvedKey:
    return ResolvedKey(workspace_id=key.workspace_id, key_id=key.id, role=key.role, rate_limit=key.rate_limit)


async def resolve(deps: Deps, req: ResolveKey) -> ResolvedKey:
    try:
        row = await deps.pool.fetchrow("SELECT * FROM api_keys WHERE key_sha256 = $1", req.key_sha256)
    except UNAVAILABLE as exc:
        # Postgres is only a projection, and every request is authenticated: read the key from the log.
        logger.warning(
            "projection unavailable; resolving the API key from the log",
            extra={"fields": {"error": type(exc).__name__}},
        )
        logged = await deps.catalog.api_key(req.key_sha256)
        if logged is None:
            raise ApiError("authentication_error", _UNKNOWN_KEY) from None
        key = logged
    else:
        if row is None:
            raise ApiError("authentication_error", _UNKNOWN_KEY)
        key = api_key_of_row(row)
    problem = key_refusal(key)
    if problem is not None:
        raise ApiError("authentication_error", problem)
    return resolved(key)


async def create(deps: Deps, req: CreateApiKey) -> ResolvedKey:
    """Register a key by hash; registering the same hash again returns the existing key."""
    row = await deps.pool.fetchrow("SELECT * FROM api_keys WHERE key_sha256 = $1", req.key_sha256)
    if row is not None:
        return resolved(api_key_of_row(row))
    key_id = ids.new_id(ids.API_KEY)
    record = ApiKeyCreated(
        workspace_id=req.workspace_id,
        key_id=key_id,
        key_sha256=req.key_sha256,
        name=req.name,
        created_at=now_rfc3339(),
        role=req.role,
        partial_key_hint=req.partial_key_hint,
    )
    seq = await deps.catalog.append(
        subjects.api_key_log(key_id),
        record.model_dump(mode="json"),
        expected_last_seq=None,
        msg_id=f"apikey:{req.key_sha256}",
    )
    await deps.caught_up_catalog(seq)
    row = await deps.pool.fetchrow("SELECT * FROM api_keys WHERE key_sha256 = $1", req.key_sha256)
    if row is None:
        raise ApiError("api_error", "the key was recorded but cannot be read back yet; register it again")
    return resolved(api_key_of_row(row))
