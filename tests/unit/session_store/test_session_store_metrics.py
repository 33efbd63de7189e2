"""Appends are counted by outcome and timed, whatever ends them."""

from __future__ import annotations

import pytest

from corral.contracts.api.errors import conflict
from corral.session_store import metrics
from corral.telemetry.metrics import REGISTRY


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_appends_are_counted_ok_refused_or_failed_and_timed() -> None:
    outcomes = ("ok", "refused", "failed")
    before = {o: value("corral_session_store_appends_total", stream="unit", outcome=o) for o in outcomes}
    timed = value("corral_session_store_append_duration_seconds_count", stream="unit")

    @metrics.timed_append("unit")
    async def append(fail: Exception | None) -> int:
        if fail is not None:
            raise fail
        return 7

    assert await append(None) == 7
    with pytest.raises(Exception, match="moved"):
        await append(conflict("the log moved", error_code="wrong_last_sequence"))
    with pytest.raises(ConnectionError):
        await append(ConnectionError("bus away"))
    for outcome in outcomes:
        assert value("corral_session_store_appends_total", stream="unit", outcome=outcome) == before[outcome] + 1
    assert value("corral_session_store_append_duration_seconds_count", stream="unit") == timed + 3
