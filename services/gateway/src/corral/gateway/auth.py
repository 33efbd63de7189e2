"""API keys: read from ``x-api-key`` or ``Authorization: Bearer``, resolved to a workspace by hash.

The gateway never sees a stored key: it looks the key's SHA-256 (hex) up in the keys it follows
live from the catalog (``corral.gateway.keydirectory``), which decide suspended and revoked keys at
once; a key not there yet is sent to the session-store (``auth.resolve``) and the answer cached,
positive ones for ``auth_cache_ttl_s`` and unknown keys for a few seconds, in a bounded LRU.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from corral.contracts.api.admin import ApiKey, key_refusal
from corral.contracts.api.errors import ApiError
from corral.contracts.rpc import ResolvedKey, ResolveKey, StoreOps
from corral.gateway.keydirectory import KeyDirectory
from corral.gateway.store import Store

NEGATIVE_TTL_S: Final = 5.0
MAX_CACHED_KEYS: Final = 10_000

_HOW_TO: Final = "send your Corral API key as `x-api-key: <key>` or `Authorization: Bearer <key>`"

WORKSPACE_HEADER: Final = "anthropic-workspace-id"
"""Names the workspace a request is meant for (the SDK's ``workspace_id=``); optional."""


@dataclass(frozen=True)
class _Entry:
    resolved: ResolvedKey | None
    expires_at: float


class KeyCache:
    """Resolved keys by hash; ``None`` records a key the session-store does not know."""

    def __init__(
        self,
        *,
        ttl_s: float,
        negative_ttl_s: float = NEGATIVE_TTL_S,
        max_entries: int = MAX_CACHED_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._negative_ttl_s = negative_ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def lookup(self, key_sha256: str) -> tuple[bool, ResolvedKey | None]:
        """``(hit, resolved)``: whether a live answer is cached, and what it is."""
        entry = self._entries.get(key_sha256)
        if entry is None:
            return False, None
        if entry.expires_at <= self._clock():
            del self._entries[key_sha256]
            return False, None
        self._entries.move_to_end(key_sha256)
        return True, entry.resolved

    def remember(self, key_sha256: str, resolved: ResolvedKey | None) -> None:
        ttl = self._ttl_s if resolved is not None else self._negative_ttl_s
        if ttl <= 0:
            return
        self._entries[key_sha256] = _Entry(resolved, self._clock() + ttl)
        self._entries.move_to_end(key_sha256)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


def api_key_from(headers: Mapping[str, str]) -> str | None:
    """The key the client sent: ``x-api-key`` first, else a ``Bearer`` token."""
    key = headers.get("x-api-key", "").strip()
    if key:
        return key
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def resolve(
    headers: Mapping[str, str], *, store: Store, cache: KeyCache, directory: KeyDirectory | None = None
) -> ResolvedKey:
    """The workspace, key id, role and rate limit of the request's API key.

    A key the ``directory`` (the keys followed live from the catalog) knows is decided there: a
    suspended or revoked key is refused at once, whatever the cache holds. Any other key is resolved
    through the session-store (cached), then checked against the directory again, in case its
    revocation arrived meanwhile.

    Raises:
        ApiError: 401 when the key is missing, unknown, suspended or revoked; the store's own error
            when it fails.
    """
    key = api_key_from(headers)
    if key is None:
        raise ApiError("authentication_error", f"missing API key: {_HOW_TO}")
    digest = key_sha256(key)
    known = directory.by_hash(digest) if directory is not None else None
    if known is not None:
        return _usable(known)
    hit, resolved = cache.lookup(digest)
    if not hit:
        resolved = await _ask_store(store, digest)
        cache.remember(digest, resolved)
    if resolved is None:
        raise ApiError("authentication_error", f"invalid x-api-key: this key is not known here; {_HOW_TO}")
    current = directory.by_id(resolved.key_id) if directory is not None else None
    return resolved if current is None else _usable(current)


def _usable(key: ApiKey) -> ResolvedKey:
    refusal = key_refusal(key)
    if refusal is not None:
        raise ApiError("authentication_error", refusal)
    return ResolvedKey(workspace_id=key.workspace_id, key_id=key.id, role=key.role, rate_limit=key.rate_limit)


def require_admin(caller: ResolvedKey) -> None:
    """Only a key with role ``admin`` may use the admin API.

    Raises:
        ApiError: 403 ``permission_error`` for any other key, saying what kind of key is needed.
    """
    if caller.role != "admin":
        raise ApiError(
            "permission_error",
            "this API key cannot use the admin API (/v1/organizations/...): it needs a key with role `admin`; "
            "use the admin key `make up` printed (also in .corral/admin-key), or ask an administrator "
            "for a key created with role `admin`",
        )


async def _ask_store(store: Store, digest: str) -> ResolvedKey | None:
    try:
        return await store.call(StoreOps.AUTH_RESOLVE, ResolveKey(key_sha256=digest))
    except ApiError as exc:
        if exc.error_type in ("authentication_error", "permission_error", "not_found_error"):
            return None
        raise


def check_workspace(headers: Mapping[str, str], caller: ResolvedKey) -> None:
    """A request that names a workspace (``anthropic-workspace-id``) must name its key's own.

    A Corral key belongs to exactly one workspace and acts only there, so a request for another
    workspace is refused rather than quietly run in the key's.

    Raises:
        ApiError: 403 ``permission_error`` when the header names another workspace.
    """
    named = headers.get(WORKSPACE_HEADER, "").strip()
    if named and named != caller.workspace_id:
        raise ApiError(
            "permission_error",
            f"this API key cannot act in workspace {named[:128]!r}: a key acts only in its own workspace; "
            f"send `{WORKSPACE_HEADER}: {caller.workspace_id}` or leave the header out, "
            "or use a key of that workspace",
        )
