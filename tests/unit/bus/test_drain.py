"""A drain that fails at shutdown is logged with the client and the error, and the connection is
closed anyway (before, the failure was passed over without a trace)."""

from __future__ import annotations

import pytest

from corral.bus.connecting import drain


class FailingConnection:
    def __init__(self) -> None:
        self.closed = False

    async def drain(self) -> None:
        raise TimeoutError("flush timed out")

    async def close(self) -> None:
        self.closed = True


async def test_a_failed_drain_is_logged_and_the_connection_closed(caplog: pytest.LogCaptureFixture) -> None:
    nc = FailingConnection()
    await drain(nc, name="harness")  # type: ignore[arg-type]
    assert nc.closed
    [record] = [r for r in caplog.records if "could not drain" in r.getMessage()]
    assert record.fields == {  # type: ignore[attr-defined]
        "client": "harness",
        "error": "TimeoutError: flush timed out",
    }
