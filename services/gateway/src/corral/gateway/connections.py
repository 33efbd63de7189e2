"""Connection limits, so slow or greedy clients cannot hold every file descriptor of the gateway.

``limited_protocol(limits)`` is uvicorn's httptools protocol plus:

- a **header read timeout**: a connection must deliver a request's headers within
  ``header_timeout_s`` of connecting (or of the first byte of each later request on a keep-alive
  connection); otherwise it is closed. Idle keep-alive connections are closed by uvicorn's own
  ``timeout_keep_alive``.
- a **per-client connection limit**: at most ``per_client`` open connections per peer address; a
  connection over it is closed as soon as it is accepted (0: no limit).

What the limits did is logged at WARNING, at most once per ``LOG_INTERVAL_S`` (with counts and the
busiest peer), not once per connection: a flood must not turn into a flood of log lines.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)

LOG_INTERVAL_S: Final = 5.0


@dataclass
class LimitReport:
    """Counts of what the limits did since the last log line; logs at most once per interval."""

    interval_s: float = LOG_INTERVAL_S
    refused: Counter[str] = field(default_factory=Counter)
    timed_out: Counter[str] = field(default_factory=Counter)
    _last: float = float("-inf")
    _flush: asyncio.TimerHandle | None = None

    def note_refused(self, peer: str, loop: asyncio.AbstractEventLoop) -> None:
        self.refused[peer] += 1
        self._maybe_log(loop)

    def note_timed_out(self, peer: str, loop: asyncio.AbstractEventLoop) -> None:
        self.timed_out[peer] += 1
        self._maybe_log(loop)

    def _maybe_log(self, loop: asyncio.AbstractEventLoop) -> None:
        wait = self._last + self.interval_s - time.monotonic()
        if wait <= 0:
            self.flush()
        elif self._flush is None:
            self._flush = loop.call_later(wait, self.flush)

    def flush(self) -> None:
        self._flush = None
        self._last = time.monotonic()
        for counts, what, setting in (
            (
                self.refused,
                "refused {n} connection(s) over the per-client limit",
                "CORRAL_GATEWAY_MAX_CONNECTIONS_PER_CLIENT",
            ),
            (
                self.timed_out,
                "closed {n} connection(s) that sent no complete request headers in time",
                "CORRAL_GATEWAY_HEADER_TIMEOUT_S",
            ),
        ):
            if not counts:
                continue
            total = sum(counts.values())
            peer, most = counts.most_common(1)[0]
            logger.warning(
                f"{what.format(n=total)} (most from {peer}: {most}; {len(counts)} peer(s)); see {setting}",
                extra={"fields": {"connections": total, "peers": len(counts), "top_peer": peer, "top_count": most}},
            )
            counts.clear()


@dataclass
class ConnectionLimits:
    header_timeout_s: float
    per_client: int
    open_by_peer: Counter[str] = field(default_factory=Counter)
    report: LimitReport = field(default_factory=LimitReport)


def limited_protocol(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol class, with ``limits`` applied to every connection."""

    class LimitedProtocol(HttpToolsProtocol):
        _peer: str | None = None
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            peername: Any = transport.get_extra_info("peername")
            peer = str(peername[0]) if isinstance(peername, tuple) and peername else "unknown"
            if limits.per_client and limits.open_by_peer[peer] >= limits.per_client:
                transport.abort()  # never admitted: connection_lost below does nothing for it
                limits.report.note_refused(peer, self.loop)
                return
            self._peer = peer
            limits.open_by_peer[peer] += 1
            super().connection_made(transport)
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._peer is None:
                return
            self._disarm_header_timer()
            limits.open_by_peer[self._peer] -= 1
            if limits.open_by_peer[self._peer] <= 0:
                del limits.open_by_peer[self._peer]
            self._peer = None
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._header_timer is None:
                self._arm_header_timer()

        def on_headers_complete(self) -> None:
            self._disarm_header_timer()
            super().on_headers_complete()

        def _arm_header_timer(self) -> None:
            self._header_timer = self.loop.call_later(limits.header_timeout_s, self._headers_too_slow)

        def _disarm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self._peer is not None and not self.transport.is_closing():
                limits.report.note_timed_out(self._peer, self.loop)
                self.transport.close()

    return LimitedProtocol
