"""corral.bus.Operations answers every request with an RpcReply, whatever the handler does."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ConfigDict

from corral.bus import Operations, PayloadTooLarge
from corral.bus.operations import _too_large
from corral.contracts.api.errors import ApiError, ErrorDetail
from corral.contracts.rpc import RpcReply


class Ask(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int


class Told(BaseModel):
    doubled: int


class Outage(Exception):
    pass


async def double(request: Ask) -> Told:
    if request.n == 13:
        raise ApiError("not_found_error", "13 is not here", error_code="unlucky")
    if request.n == 7:
        raise Outage("the database is down")
    if request.n == 0:
        raise RuntimeError("secret internals")
    if request.n == 99:
        raise PayloadTooLarge(2_000_000, 1_048_576)
    return Told(doubled=request.n * 2)


def translate(exc: Exception) -> ErrorDetail | None:
    return ErrorDetail(type="overloaded_error", message="retry shortly") if isinstance(exc, Outage) else None


OPS = Operations(
    service="test service",
    routes={"double": (Ask, double)},
    subject=lambda op: f"corral.rpc.test.{op}",
    queue="test",
    translate=translate,
)


async def answer(body: object) -> RpcReply:
    return RpcReply.model_validate_json(await OPS.answer("double", json.dumps(body).encode(), {}))


async def test_a_request_is_decoded_run_and_its_result_answered() -> None:
    assert await answer({"n": 4}) == RpcReply(ok=True, result={"doubled": 8})


@pytest.mark.parametrize(
    ("body", "message"),
    [({"n": "four"}, "n: Input should be a valid integer"), ({"n": 1, "m": 2}, "m: Extra inputs are not permitted")],
)
async def test_a_request_that_does_not_validate_names_the_field(body: object, message: str) -> None:
    reply = await answer(body)
    assert reply.error is not None and reply.error.type == "invalid_request_error"
    assert reply.error.message.startswith(message)


async def test_an_api_error_is_answered_as_it_says() -> None:
    reply = await answer({"n": 13})
    assert reply.error == ErrorDetail(
        type="not_found_error", message="13 is not here", details={"error_code": "unlucky"}
    )


async def test_an_expected_failure_is_translated_and_an_unexpected_one_names_no_internals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert (await answer({"n": 7})).error == ErrorDetail(type="overloaded_error", message="retry shortly")
    reply = await answer({"n": 0})
    assert reply.error == ErrorDetail(type="api_error", message="double failed inside the test service")
    assert "secret internals" in caplog.text  # in the log, with the traceback, not on the wire


async def test_a_record_too_large_for_the_bus_is_request_too_large() -> None:
    reply = await answer({"n": 99})
    assert reply.error is not None and reply.error.type == "request_too_large"
    assert "2000000 bytes" in reply.error.message and "1048576" in reply.error.message


def test_a_reply_too_large_for_the_bus_is_replaced_by_request_too_large() -> None:
    reply = RpcReply.model_validate_json(_too_large("events.list", 3_000_000, 1_048_576))
    assert reply.error is not None and reply.error.type == "request_too_large"
    assert "events.list" in reply.error.message and "limit" in reply.error.message
