"""What a worker's wake-up loop counts (its health answer reports them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WakeCounts:
    lease_waits: int = 0
    """Wake-ups that found their session leased and waited for it."""
    lease_handoffs: int = 0
    """Wake-ups that got the lease after waiting for it (the holder let it go with work left)."""
    lease_handbacks: int = 0
    """Wake-ups handed back because the lease stayed held for all of ``lease_wait_s``."""
    joined: int = 0
    """Wake-ups handed to this worker's own run of their session (it runs again before letting go)."""
    lease_served: int = 0
    """Wake-ups that waited for the lease and were served by its holder (it let go past their input)."""
    retaken: int = 0
    """Sessions taken back right after letting them go, for input logged as they were let go."""
    takeovers: int = 0
    """Sessions taken over when their lease expired (its holder died), before any wake-up came back."""
