"""What the gateway keeps per ``Idempotency-Key`` (KV bucket ``corral_idempotency``).

A request with the header claims ``<workspace_id>.<sha256 of the key>`` with a ``pending`` record,
runs, and replaces the claim with the ``done`` record of its response; a request with the same key
and the same ``fingerprint`` (method, path and body) is answered with that response, one with
another fingerprint is a 409.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class IdempotencyRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state: Literal["pending", "done"]
    fingerprint: str
    """SHA-256 (hex) of the request's method, path and body."""
    claimed_at: float
    """Unix time of the claim; a ``pending`` claim older than the gateway's deadline is abandoned."""
    status: int | None = None
    body: str | None = None
    """The response body (JSON text); ``None`` when it was too large to keep."""
