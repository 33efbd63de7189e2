"""A request the database fails for its own state (lost, restarting, a pooled connection asyncpg
cannot go on with) is answered "unavailable, retry" (the gateway's 503), never an internal error."""

from __future__ import annotations

import asyncpg
import pytest

from corral.session_store.rpc import _translate


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.exceptions.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        ConnectionRefusedError(111, "Connection refused"),
    ],
)
def test_a_database_in_no_state_to_answer_is_unavailable_not_an_internal_error(exc: Exception) -> None:
    detail = _translate(exc)
    assert detail is not None
    assert detail.type == "overloaded_error"
    assert "retry" in detail.message


def test_any_other_error_is_left_to_the_operations_own_handling() -> None:
    assert _translate(ValueError("a bug")) is None
