"""Opening a NATS connection: retried while the server is unreachable, refused credentials raised at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats
from nats.aio.client import Client

from corral.bus.errors import NotAuthorized
from corral.settings import NatsSettings

logger = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 5.0
"""How long a drain at shutdown may wait for subscriptions to finish what they were handed before
the connection is closed anyway (nats-py's default, 30 s, is longer than a service's stop may take)."""


def inbox_prefix(user: str) -> str:
    """Where replies to ``user``'s requests (and its consumers' deliveries) arrive: ``_INBOX.<user>``."""
    return f"_INBOX.{user}"


def is_authorization_error(exc: Exception) -> bool:
    return isinstance(exc, nats.errors.AuthorizationError) or "authorization violation" in str(exc).lower()


async def open_connection(settings: NatsSettings, *, name: str) -> Client:
    """A connected client (retrying while the server is unreachable).

    Every server of ``settings.url`` (a comma-separated list for a cluster) is given to the client,
    which connects to any of them and, when that one goes down, reconnects to another.

    With ``settings.user`` set, the connection logs in as that user and its replies arrive on
    ``_INBOX.<user>.>``, so a user's permissions can confine it to its own replies.

    Raises:
        NotAuthorized: the server refused the credentials (or their absence); retrying would not help.
    """
    refused = asyncio.Event()
    refusal: list[str] = []

    async def on_error(exc: Exception) -> None:
        if is_authorization_error(exc):
            refusal.append(str(exc))
            refused.set()
        else:
            logger.warning("nats: %s", exc, extra={"fields": {"connection": name}})

    credentials: dict[str, str] = {}
    if settings.user:
        credentials = {"user": settings.user, "inbox_prefix": inbox_prefix(settings.user)}
        if settings.password is not None:
            credentials["password"] = settings.password.get_secret_value()
    connecting = asyncio.ensure_future(
        nats.connect(
            settings.servers,
            name=name,
            connect_timeout=settings.connect_timeout_s,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            drain_timeout=DRAIN_TIMEOUT_S,
            error_cb=on_error,
            **credentials,
        )
    )
    waiting_refusal = asyncio.ensure_future(refused.wait())
    try:
        await asyncio.wait({connecting, waiting_refusal}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting_refusal.cancel()
        if not connecting.done():
            connecting.cancel()
            with contextlib.suppress(BaseException):
                await connecting
    if connecting.cancelled():
        who = f"user {settings.user!r}" if settings.user else "a client without credentials"
        raise NotAuthorized(
            f"NATS at {settings.url} refused {who} ({refusal[0] if refusal else 'authorization violation'}); "
            "set CORRAL_NATS_USER and CORRAL_NATS_PASSWORD to this service's NATS credentials "
            "(a dev stack keeps them in .corral/nats-users.json)"
        )
    return connecting.result()


async def drain(nc: Client, *, name: str) -> None:
    """Drain at shutdown: unanswered requests and unflushed publishes are lost if this fails, so a
    failure is logged (with what failed) rather than passed over; the connection is closed anyway."""
    try:
        await nc.drain()
    except Exception as exc:
        logger.warning(
            "could not drain the NATS connection at shutdown; closing it (messages not yet flushed may be lost)",
            extra={"fields": {"client": name, "error": f"{type(exc).__name__}: {exc}"[:300]}},
        )
        with contextlib.suppress(Exception):  # already logged above; closing is all that is left
            await nc.close()
