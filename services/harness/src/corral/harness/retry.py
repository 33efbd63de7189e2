"""How often and how patiently the harness retries a failed model request.

No model error terminates a session: every one Corral sees either passes (overloaded, rate
limited, a server error) or is fixed outside the session (the model key, billing, the model
server, a message too large), and a terminated session can never be used again. So a failed
request is ``retrying`` while retries go on and ``exhausted`` when the turn ends; the API's
``terminal`` (the session is about to be terminated) is never said."""

from __future__ import annotations

from dataclasses import dataclass

from corral.contracts.api.events import RetryStatus


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` retries after the first attempt; waits double from ``backoff_s`` up to ``max_backoff_s``."""

    max_retries: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s))

    def status(self, attempt: int, *, retryable: bool) -> RetryStatus:
        """What ``session.error.retry_status`` says after failed attempt number ``attempt``: an error
        that asking again cannot fix ends the turn at once (``exhausted``), the session stays usable."""
        if not retryable:
            return "exhausted"
        return "retrying" if attempt <= self.max_retries else "exhausted"
