"""Noticing that a streaming client has gone, without a task of its own.

An ASGI server says a client left by answering ``receive()`` with ``http.disconnect``; uvicorn's
``receive`` waits on an ``asyncio.Event`` its protocol sets when the connection is lost (or the
response completes). Awaiting it needs a task of its own beside the one writing the stream (about
2 KB a stream: the task, its coroutine frames, a future). ``ClientWatch`` steps the ``receive``
coroutine by hand instead, the way a task steps a coroutine: each step runs it until it waits on a
future, and the future's done callback wakes the stream's own task (``wake``), which steps it again.
The stream's task thus waits on one future for both its items and the client leaving.

``send`` after a disconnect does not say so (uvicorn 0.54 returns silently), so the watch is what
ends a stream whose client left.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from starlette.types import Receive

logger = logging.getLogger(__name__)


class ClientWatch:
    """Follows ``receive`` until it says ``http.disconnect`` (then ``gone``); ``wake`` is called when
    there may be news (call ``poll`` then). Any failure of ``receive`` counts as the client gone.
    ``close`` when the stream ends: the pending ``receive`` is closed (uvicorn's wait forgets its future).
    """

    __slots__ = ("_blocked", "_coroutine", "_receive", "_wake", "gone")

    def __init__(self, receive: Receive, wake: Callable[[], None]) -> None:
        self._receive = receive
        self._wake = wake
        self._coroutine: Coroutine[Any, Any, Any] | None = None
        self._blocked: asyncio.Future[Any] | None = None
        self.gone = False

    def poll(self) -> bool:
        """Step ``receive`` as far as it goes without waiting; whether the client has gone."""
        while not self.gone:
            blocked = self._blocked
            if blocked is not None:
                if not blocked.done():
                    return False
                self._blocked = None
            if self._coroutine is None:
                self._coroutine = self._receive()  # type: ignore[assignment]
            assert self._coroutine is not None
            try:
                waits_on = self._coroutine.send(None)
            except StopIteration as answered:
                self._coroutine = None
                message = answered.value
                if not isinstance(message, dict) or message.get("type") == "http.disconnect":
                    self.gone = True
                continue  # a request body chunk (a GET has one, empty): wait for the next message
            except (Exception, asyncio.CancelledError) as exc:
                self._coroutine = None
                self.gone = True
                logger.debug("the server's receive failed; the client counts as gone: %r", exc)
                return True
            if asyncio.isfuture(waits_on):
                waits_on.add_done_callback(self._on_done)
                self._blocked = waits_on
                return False
            # A bare yield (``asyncio.sleep(0)``): step again on the next round of the loop.
            asyncio.get_running_loop().call_soon(self._wake)
            return False
        return True

    def _on_done(self, _future: asyncio.Future[Any]) -> None:
        self._wake()

    def close(self) -> None:
        """Stop following: the pending ``receive`` is closed, nothing is left waiting."""
        blocked, self._blocked = self._blocked, None
        if blocked is not None:
            blocked.remove_done_callback(self._on_done)
        coroutine, self._coroutine = self._coroutine, None
        if coroutine is not None:
            coroutine.close()
