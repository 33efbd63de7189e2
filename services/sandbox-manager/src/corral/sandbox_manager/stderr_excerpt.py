"""A sandbox's stderr, as the manager treats it: drained as it comes, counted, and logged only as a
small rate-limited excerpt (``EXCERPT_RECORDS`` records of at most ``stderr_log_bytes`` of text per
``EXCERPT_WINDOW_S``); more than ``STDERR_MAX_BYTES`` in a window is a protocol violation."""

from __future__ import annotations

import logging
import time
from typing import Any, Final, Protocol

from corral.sandbox_manager.replies import ProtocolViolation

#: The channel's logger: these records are about its stream (and filtered by that name).
logger = logging.getLogger("corral.sandbox_manager.channel")

#: stderr excerpts: at most this many log records per window per sandbox.
EXCERPT_RECORDS: Final = 4
EXCERPT_WINDOW_S: Final = 60.0
#: stderr beyond this many bytes in one window is a protocol violation (the agent writes only the odd
#: traceback there; a flood means something else reached it, and draining it costs the manager CPU).
STDERR_MAX_BYTES: Final = 16 * 2**20


class Sandbox(Protocol):
    """Whose stderr it is (for log records)."""

    @property
    def name(self) -> str: ...

    @property
    def session_id(self) -> str | None: ...


def printable(data: bytes) -> str:
    """``data`` as log-safe text: printable ASCII, newlines and tabs; anything else becomes ``?``."""
    text = data.decode("ascii", "replace")
    return "".join(c if (" " <= c <= "~") or c in "\n\t" else "?" for c in text)


class StderrExcerpt:
    """A sandbox's stderr: drained, counted, and logged only as a small rate-limited excerpt."""

    def __init__(self, channel: Sandbox, limit: int) -> None:
        self._channel = channel
        self._limit = limit
        self._window_start = -EXCERPT_WINDOW_S
        self._records = 0
        self._budget = 0
        self._in_window = 0
        #: Bytes read from stderr and never logged (since the last record that reported them).
        self.dropped = 0
        self.total = 0

    def take(self, chunk: bytes) -> None:
        """Count and maybe log ``chunk``.

        Raises:
            ProtocolViolation: more than ``STDERR_MAX_BYTES`` in one window.
        """
        self.total += len(chunk)
        now = time.monotonic()
        if now - self._window_start >= EXCERPT_WINDOW_S:
            self._window_start, self._records, self._budget, self._in_window = now, 0, self._limit, 0
        self._in_window += len(chunk)
        if self._in_window > STDERR_MAX_BYTES:
            self.dropped += len(chunk)
            raise ProtocolViolation(
                f"it wrote more than {STDERR_MAX_BYTES} bytes to stderr within {EXCERPT_WINDOW_S:g} s"
            )
        shown = min(len(chunk), self._budget) if self._records < EXCERPT_RECORDS else 0
        if shown == 0:
            self.dropped += len(chunk)
            return
        self._records += 1
        self._budget -= shown
        dropped, self.dropped = self.dropped + len(chunk) - shown, 0
        self._log("a sandbox wrote to the exec agent's stderr", printable(chunk[:shown]), dropped)

    def close(self) -> None:
        if self.dropped:
            self._log("a sandbox's stderr was dropped (not logged)", "", self.dropped)
            self.dropped = 0

    def _log(self, message: str, text: str, dropped: int) -> None:
        fields: dict[str, Any] = {
            "sandbox": self._channel.name,
            "session_id": self._channel.session_id,
            "dropped_bytes": dropped,
            "stderr_bytes": self.total,
        }
        if text:
            fields["excerpt"] = text
        logger.warning(message, extra={"fields": fields})
