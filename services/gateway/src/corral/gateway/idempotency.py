"""``Idempotency-Key`` on every POST: one key, one effect, one response.

A POST that carries the header is run at most once per key and workspace (for
``CORRAL_GATEWAY_IDEMPOTENCY_TTL_S``): the first claims ``<workspace_id>.<sha256 of the key>`` in the
``corral_idempotency`` KV bucket (a KV *create*, so of two racing requests exactly one wins), runs,
and stores its 2xx response before sending it. Another request with the same key then gets

- the same method, path and body: the stored response, replayed (``idempotent-replayed: true``);
  while the first is still running it waits for it (up to the store deadline, then a 409 to retry);
- anything else: 409 ``conflict_error``, since the key was used for another request.

The stored fingerprint of a request is an HMAC of its method, path and body keyed with the caller's
API key, never a plain hash: a body may carry a secret (a credential's token), and the bucket is a
JetStream stream, so what it holds must be useless to anyone without that API key.

A request that fails (any non-2xx) releases its claim, so a retry with the same key runs again. A
``pending`` claim older than the store deadline (its gateway died) is taken over. The gateway stays
stateless: every gateway instance sees the same bucket.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from typing import TYPE_CHECKING, Final, Protocol

from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.bus import Entry, KeyChanged, KeyExists, PayloadTooLarge
from corral.contracts.api.errors import ApiError, conflict, invalid
from corral.contracts.idempotency import IdempotencyRecord
from corral.gateway.auth import api_key_from, resolve
from corral.gateway.errors import api_error_response, request_id_of

if TYPE_CHECKING:
    from corral.gateway.state import GatewayState

logger = logging.getLogger(__name__)

HEADER: Final = "idempotency-key"
REPLAYED_HEADER: Final = "idempotent-replayed"
MAX_KEY_LENGTH: Final = 255
_FIRST_WAIT_S: Final = 0.01
_MAX_WAIT_S: Final = 0.2


class ReplayBucket(Protocol):
    """The KV operations used (``corral.bus.KeyValueBucket``; a dict-backed fake in unit tests)."""

    async def get(self, key: str) -> Entry | None: ...
    async def create(self, key: str, value: bytes) -> int: ...
    async def update(self, key: str, value: bytes, *, last: int) -> int: ...
    async def delete(self, key: str, *, last: int | None = None) -> object: ...


class IdempotencyMiddleware:
    """Sits inside the body cap: reads the (capped) body, claims the key, runs or replays.

    ``wait_s``: how long a duplicate waits for the first request to finish (and how old a pending
    claim must be to be taken over).
    """

    def __init__(self, app: ASGIApp, *, state: GatewayState, wait_s: float) -> None:
        self.app = app
        self.state = state
        self.wait_s = wait_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = Headers(scope=scope).get(HEADER) if scope["type"] == "http" and scope["method"] == "POST" else None
        backends = self.state.backends
        bucket = backends.replies if backends is not None else None
        if key is None or backends is None or bucket is None:
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        try:
            if not 0 < len(key) <= MAX_KEY_LENGTH:
                raise invalid(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters long")
            try:
                caller = await resolve(
                    Headers(scope=scope), store=backends.store, cache=self.state.keys, directory=backends.directory
                )
            except ApiError:
                await self.app(scope, receive, send)  # the route answers the auth error as usual
                return
            body = await _read_body(receive)
        except ApiError as exc:
            await api_error_response(exc, request_id=request_id)(scope, receive, send)
            return
        fingerprint = request_fingerprint(api_key_from(Headers(scope=scope)) or "", scope["path"], body)
        slot = f"{caller.workspace_id}.{hashlib.sha256(key.encode()).hexdigest()}"
        claim = _Claim(bucket, slot, fingerprint)
        try:
            answer = await claim.take(deadline=time.monotonic() + self.wait_s)
        except ApiError as exc:
            await api_error_response(exc, request_id=request_id)(scope, receive, send)
            return
        if answer is not None:
            await answer(scope, receive, send)
            return
        await self._run(scope, body, send, claim)

    async def _run(self, scope: Scope, body: bytes, send: Send, claim: _Claim) -> None:
        messages: list[Message] = []
        sent_body = False

        async def replay_receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        async def capture(message: Message) -> None:
            messages.append(message)

        try:
            await self.app(scope, replay_receive, capture)
        except BaseException:
            await claim.release()
            raise
        start = next((m for m in messages if m["type"] == "http.response.start"), None)
        status = int(start["status"]) if start is not None else 0
        if 200 <= status < 300:
            content = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
            await claim.complete(status, content)
        else:
            await claim.release()
        for message in messages:
            await send(message)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class _Claim:
    def __init__(self, bucket: ReplayBucket, slot: str, fingerprint: str) -> None:
        self.bucket = bucket
        self.slot = slot
        self.fingerprint = fingerprint
        self.revision = 0

    def _pending(self) -> bytes:
        record = IdempotencyRecord(state="pending", fingerprint=self.fingerprint, claimed_at=time.time())
        return record.model_dump_json().encode()

    async def take(self, *, deadline: float) -> Response | None:
        """``None`` once this request holds the claim (run it); else the response to send instead.

        Raises:
            ApiError: 409, the key belongs to another request, or its first use is still running.
        """
        pause = _FIRST_WAIT_S
        stale_after = max(deadline - time.monotonic(), 1.0)
        while True:
            try:
                self.revision = await self.bucket.create(self.slot, self._pending())
                return None
            except KeyExists:
                pass
            entry = await self.bucket.get(self.slot)
            if entry is None:
                continue  # released or expired in between: claim it again
            try:
                record = IdempotencyRecord.model_validate_json(entry.value)
            except ValidationError:
                logger.warning("unreadable idempotency record replaced", extra={"fields": {"slot": self.slot}})
                record = None
            if record is not None and record.fingerprint != self.fingerprint:
                raise conflict(
                    "this Idempotency-Key was already used for a different request (another method, path or "
                    "body); use a new key for a new request",
                    error_code="idempotency_key_reused",
                )
            if record is not None and record.state == "done":
                return _replay(record)
            if record is None or time.time() - record.claimed_at > stale_after:
                try:  # its gateway is gone (or the record is unreadable): take the claim over
                    self.revision = await self.bucket.update(self.slot, self._pending(), last=entry.revision)
                    return None
                except KeyChanged:
                    continue
            if time.monotonic() >= deadline:
                raise conflict(
                    "a request with this Idempotency-Key is still in progress; retry it in a moment",
                    error_code="idempotency_key_in_use",
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, _MAX_WAIT_S)

    async def complete(self, status: int, body: bytes) -> None:
        record = IdempotencyRecord(
            state="done", fingerprint=self.fingerprint, claimed_at=time.time(), status=status, body=body.decode()
        )
        try:
            await self.bucket.update(self.slot, record.model_dump_json().encode(), last=self.revision)
        except PayloadTooLarge:
            kept = record.model_copy(update={"body": None})
            await self.bucket.update(self.slot, kept.model_dump_json().encode(), last=self.revision)
        except KeyChanged:
            logger.warning("idempotency claim taken over before it completed", extra={"fields": {"slot": self.slot}})

    async def release(self) -> None:
        try:
            await self.bucket.delete(self.slot, last=self.revision)
        except KeyChanged:
            pass
        except Exception:  # the claim expires with the bucket's TTL; a retry then runs again
            logger.warning("cannot release an idempotency claim", exc_info=True, extra={"fields": {"slot": self.slot}})


def _replay(record: IdempotencyRecord) -> Response:
    if record.body is None or record.status is None:
        raise conflict(
            "the request with this Idempotency-Key was already applied, but its response was too large to "
            "keep; look the object up with a GET",
            error_code="idempotency_response_not_kept",
        )
    return Response(
        record.body, status_code=record.status, media_type="application/json", headers={REPLAYED_HEADER: "true"}
    )


def request_fingerprint(api_key: str, path: str, body: bytes) -> str:
    """What tells a replay from another request under the same key: an HMAC keyed with the API key.

    A plain hash of a body that carries a short secret could be reversed by guessing; without the
    caller's API key (of which Corral keeps only a hash) this cannot.
    """
    return hmac.new(api_key.encode(), b"\0".join([b"POST", path.encode(), body]), hashlib.sha256).hexdigest()
