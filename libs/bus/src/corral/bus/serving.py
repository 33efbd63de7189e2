"""Answering requests on a subject (``Bus.serve``): every request answered at once, whatever the
handler does, replies of any size through the bodies store when asked."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg

from corral.bus.bodies import Bodies, fits
from corral.contracts.api.errors import ErrorDetail
from corral.contracts.rpc import RpcReply

logger = logging.getLogger(__name__)

Handler = Callable[[bytes, dict[str, str]], Awaitable[bytes]]
"""A request handler: request payload and headers in, reply payload out."""


def error_reply(kind: str, message: str) -> bytes:
    """An ``RpcReply`` carrying only an error: what a request gets when its handler could not answer."""
    return RpcReply(ok=False, error=ErrorDetail(type=kind, message=message)).model_dump_json().encode()


@contextlib.asynccontextmanager
async def serve(
    nc: Client,
    bodies: Bodies,
    max_payload: int,
    flush: Callable[[], Awaitable[None]],
    subject: str,
    handler: Handler,
    *,
    queue: str,
    limit: int = 256,
    too_large: Callable[[int, int], bytes] | None = None,
    large_replies: bool = False,
) -> AsyncIterator[None]:
    """Answer requests on ``subject`` (a queue group shares the load) while the block runs; the
    block starts once the server routes ``subject`` here, so another connection can ask at once.

    Every request is answered, at once, never left to the caller's deadline: a handler that
    raises is logged (with the subject) and answered with an ``RpcReply`` error (``api_error``);
    a reply larger than the server carries is replaced by ``too_large(size, limit)`` (by a
    ``request_too_large`` ``RpcReply`` without it); a reply the connection refuses to send is
    logged and answered with an ``api_error`` ``RpcReply``. With ``large_replies`` a reply of any
    size is sent, through the bodies object store when it is larger than one message.

    Each request runs in its own task, at most ``limit`` at once; on exit the subscription is
    removed and in-flight requests finish before the block returns.
    """
    slots = asyncio.Semaphore(limit)
    inflight: set[asyncio.Task[None]] = set()

    async def answer(msg: Msg) -> None:
        async with slots:
            fields = {"subject": msg.subject}
            try:
                headers = dict(msg.headers or {})
                reply = await handler(await bodies.unspill(msg.data, headers), headers)
            except Exception:
                logger.exception("request handler failed", extra={"fields": fields})
                reply = error_reply("api_error", f"the service answering {msg.subject} failed; retry shortly")
            if not msg.reply:
                return
            reply_headers: dict[str, str] | None = None
            if large_replies and not fits(reply, max_payload):
                try:
                    reply_headers = await bodies.spill(reply)
                    reply = b""
                except Exception:
                    logger.exception("reply could not be stored", extra={"fields": fields})
            if len(reply) > max_payload:
                logger.warning(
                    "reply too large for the bus",
                    extra={"fields": {**fields, "size": len(reply), "limit": max_payload}},
                )
                reply = (
                    too_large(len(reply), max_payload)
                    if too_large is not None
                    else error_reply(
                        "request_too_large",
                        f"the answer on {msg.subject} is {len(reply)} bytes, more than the "
                        f"{max_payload} bytes the bus carries (NATS max_payload); ask for less",
                    )
                )
            try:
                await nc.publish(msg.reply, reply, headers=reply_headers)
            except Exception:
                logger.exception("reply could not be sent", extra={"fields": {**fields, "size": len(reply)}})
                failed = error_reply("api_error", f"the answer on {msg.subject} could not be sent")
                with contextlib.suppress(Exception):
                    await nc.publish(msg.reply, failed)

    async def on_message(msg: Msg) -> None:
        task = asyncio.get_running_loop().create_task(answer(msg))
        inflight.add(task)
        task.add_done_callback(inflight.discard)

    sub = await nc.subscribe(subject, queue=queue, cb=on_message)
    try:
        # SUB is only buffered: the round trip makes the server route requests here before the
        # block runs, so a service that says it is ready is never answered "no responders"
        await flush()
        yield
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        if inflight:
            await asyncio.gather(*inflight, return_exceptions=True)
