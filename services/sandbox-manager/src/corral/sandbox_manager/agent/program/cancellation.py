"""One running request: its deadline and whether it was cancelled (by ``cancel`` or the deadline)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class Call:
    """One running request: its deadline and whether it was cancelled."""

    id: object
    deadline: float
    timeout_s: float = 0.0
    cancelled: threading.Event = field(default_factory=threading.Event)

    def stopped(self) -> str | None:
        if self.cancelled.is_set():
            return "cancelled"
        if time.monotonic() >= self.deadline:
            return "timeout"
        return None
