"""Every API key as it is now, followed live from the catalog on every gateway.

Each gateway follows the API keys' catalog subjects (``corral.catalog.apikeys.*``) from the first
record on, with an ordered consumer, and folds them here: a key's hash, workspace, role, status and
rate limit. A key this directory knows is decided here, without asking the session-store, so a key
an administrator suspends or revokes (``corral.api_key_updated``) is refused by every gateway as
soon as the record reaches it (milliseconds), whatever the key cache (``CORRAL_GATEWAY_AUTH_CACHE_TTL_S``)
holds; a new rate limit applies from the next request. A key not seen yet (created a moment ago,
or while the follower catches up) is resolved through the session-store as before.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from pydantic import ValidationError

from corral.bus import Bus
from corral.contracts import subjects
from corral.contracts.api.admin import ApiKey
from corral.contracts.log import API_KEY_RECORD_ADAPTER, ApiKeyCreated, ApiKeyRecord, fold_api_key

logger = logging.getLogger(__name__)

RETRY_S: Final = 1.0
"""Wait before following again after the follower failed (the bus reconnecting)."""


class KeyDirectory:
    """Keys by id and by hash, as the records folded so far say."""

    def __init__(self) -> None:
        self._keys: dict[str, ApiKey] = {}
        self._ids_by_hash: dict[str, str] = {}
        self.last_seq = 0
        """The catalog sequence of the last record folded (following resumes after it)."""

    def apply(self, record: ApiKeyRecord) -> None:
        if isinstance(record, ApiKeyCreated):
            self._ids_by_hash[record.key_sha256] = record.key_id
        folded = fold_api_key(self._keys.get(record.key_id), record)
        if folded is not None:
            self._keys[record.key_id] = folded

    def by_hash(self, key_sha256: str) -> ApiKey | None:
        key_id = self._ids_by_hash.get(key_sha256)
        return None if key_id is None else self._keys.get(key_id)

    def by_id(self, key_id: str) -> ApiKey | None:
        return self._keys.get(key_id)


async def follow(bus: Bus, directory: KeyDirectory) -> None:
    """Fold every API key record into ``directory``, live, until cancelled (following again after a
    failure, from the record after the last one folded)."""
    while True:
        try:
            async for message in bus.follow(
                subjects.CATALOG_STREAM, subjects.API_KEYS_WILDCARD, after_seq=directory.last_seq
            ):
                try:
                    record = API_KEY_RECORD_ADAPTER.validate_json(message.data)
                except ValidationError as exc:
                    logger.error(
                        "unreadable API key record skipped",
                        extra={"fields": {"seq": message.seq, "errors": exc.error_count()}},
                    )
                else:
                    directory.apply(record)
                directory.last_seq = max(directory.last_seq, message.seq)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning(
                "following the API keys failed; following again shortly",
                extra={"fields": {"error": type(exc).__name__, "retry_s": RETRY_S}},
            )
        await asyncio.sleep(RETRY_S)
