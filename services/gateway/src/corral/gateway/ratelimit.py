"""Per-API-key rate limits: a token bucket per key, refilled at ``rate`` requests a second up to
``burst``. Over the limit a request is a 429 ``rate_limit_error`` with ``retry-after`` headers, which
the SDK honours when it retries. A key with its own rate limit (set through the admin API) is
refilled at that one instead."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from corral.contracts.api.admin import RateLimit
from corral.contracts.api.errors import ApiError


class RateLimited(ApiError):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(
            "rate_limit_error",
            f"rate limit exceeded for this API key; retry in {retry_after_s:.2f} s",
            error_code="rate_limited",
        )
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {
            "retry-after": str(max(1, math.ceil(self.retry_after_s))),
            "retry-after-ms": str(max(1, math.ceil(self.retry_after_s * 1000))),
        }


class RateLimiter:
    """Token buckets keyed by API key id; the least recently used keys are forgotten past ``max_keys``."""

    def __init__(
        self, *, rate: float, burst: int, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def check(self, key: str, override: RateLimit | None = None) -> None:
        """Take one token for ``key``, refilled at the key's own ``override`` when it has one, else at
        the defaults (a ``rate`` of 0: no limit).

        Raises:
            RateLimited: the bucket is empty; says how long until a token is back.
        """
        rate, burst = (override.requests_per_second, float(override.burst)) if override else (self.rate, self.burst)
        if rate <= 0:
            return
        now = self._clock()
        tokens, at = self._buckets.get(key, (burst, now))
        tokens = min(burst, tokens + (now - at) * rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            raise RateLimited((1.0 - tokens) / rate)
        self._buckets[key] = (tokens - 1.0, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
