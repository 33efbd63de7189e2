"""The mirrors of Corral's session log and catalog in the external subscribers' NATS account, reached
through that account's JetStream API as Corral's account imports it (``MIRRORS_API``): made by the
session-store, and purged of a deleted session's history (a mirror does not follow its origin's
purges). The accounts' exports and imports are the NATS server's config
(``corral.devstack.nats_accounts`` has the launcher's)."""

from __future__ import annotations

import asyncio
import time

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js import errors as js_errors

from corral.bus.errors import Refused, StreamMismatch
from corral.bus.settling import find_or_make
from corral.contracts.subscribers import MIRRORS_API, ORIGIN_API, mirror_delivery


class Mirrors:
    """The subscribers' account's mirrors, as Corral's account sees them."""

    def __init__(self, nc: Client, *, timeout_s: float, replicas: int = 1) -> None:
        self._js: JetStreamContext = nc.jetstream(prefix=MIRRORS_API, timeout=timeout_s)
        self._replicas = replicas

    async def ensure(self, stream: str) -> None:
        """Create the mirror of ``stream`` (same name, same sequences, as many copies as Corral's
        streams: ``CORRAL_NATS_REPLICAS``) when missing; refuse
        (``StreamMismatch``) a stream of that name there that mirrors something else.

        Raises:
            Refused: nothing answers on ``MIRRORS_API``: the account is not set up.
        """
        source = js_api.StreamSource(
            name=stream, external=js_api.ExternalStream(api=ORIGIN_API, deliver=mirror_delivery(stream))
        )

        async def make() -> object:
            return await self._js.add_stream(
                name=stream,
                mirror=source,
                storage=js_api.StorageType.FILE,
                deny_delete=True,
                num_replicas=self._replicas,
            )

        try:  # a sibling making it at once (two session-stores) is waited for (``settling``)
            info = await find_or_make(lambda: self._js.stream_info(stream), make, missing=js_errors.NotFoundError)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as exc:
            raise _no_account(exc) from None
        found = info.config.mirror
        external = found.external if found is not None else None
        if found is None or found.name != stream or external is None or external.api != ORIGIN_API:
            raise StreamMismatch(
                f"stream {stream} of the subscribers' account is not a mirror of Corral's {stream} through "
                f"{ORIGIN_API}; remove it there (it is made again)"
            )

    async def purge(self, stream: str, subject: str, *, below: int, wait_s: float = 5.0) -> None:
        """Purge ``subject``'s messages below sequence ``below`` (the origin's sequences) from the
        mirror of ``stream``, once the mirror holds ``below`` (waiting up to ``wait_s``): what it had
        not copied yet could otherwise land after the purge.

        Raises:
            Refused: the account is not set up, or the server refused.
        """
        deadline = time.monotonic() + wait_s
        try:
            while True:  # the mirror's progress is seen only by asking
                copied = (await self._js.stream_info(stream)).state.last_seq
                if copied >= below or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.05)
            await self._js.purge_stream(stream, subject=subject, seq=below)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as exc:
            raise _no_account(exc) from None
        except js_errors.APIError as exc:
            raise Refused(f"purging {subject} from the mirror of {stream}: {exc.description or exc}") from exc


def _no_account(exc: Exception) -> Refused:
    return Refused(
        f"nothing answers on {MIRRORS_API} ({type(exc).__name__}): the subscribers' NATS account that holds "
        "the mirrors is not set up (see libs/devstack/README.md, NATS accounts); set it up, or unset "
        "CORRAL_SESSION_STORE_SUBSCRIBER_MIRRORS"
    )
