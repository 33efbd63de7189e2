"""What the connection limits did is logged with counts, at most once per interval."""

from __future__ import annotations

import asyncio

import pytest

from corral.gateway.connections import LimitReport


async def test_a_flood_of_refusals_is_a_few_log_lines_with_counts(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    report = LimitReport(interval_s=0.05)
    flushed = asyncio.Event()
    original = report.flush

    def flush() -> None:
        original()
        flushed.set()

    report.flush = flush  # type: ignore[method-assign]
    with caplog.at_level("WARNING", logger="corral.gateway.connections"):
        for _ in range(100):
            report.note_refused("10.0.0.7", loop)
        report.note_timed_out("10.0.0.8", loop)
        flushed.clear()
        async with asyncio.timeout(5):
            await flushed.wait()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines  # the first refusal at once, then the rest of each kind together
    assert "refused 1 connection(s)" in lines[0] and "10.0.0.7" in lines[0]
    assert "refused 99 connection(s)" in lines[1]
    assert "closed 1 connection(s)" in lines[2] and "10.0.0.8" in lines[2]
