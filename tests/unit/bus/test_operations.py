"""corral.bus.Operations answers every request with an RpcReply, whatever the handler does; Bus.call
asks an operation by its descriptor and returns its typed reply, or raises what the reply says."""

from __future__ import annotations

import json

import nats.errors
import pytest
from nats.js import errors as nats_js_errors
from pydantic import BaseModel, ConfigDict

from corral.bus import Bus, NoResponders, Operations, PayloadTooLarge, StreamUnavailable, UnreadableReply
from corral.bus.operations import _too_large
from corral.contracts.api.errors import BUS_UNANSWERED, ApiError, ErrorDetail
from corral.contracts.health import Health, HealthCheck, health_op
from corral.contracts.operation import Operation, operation
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


DOUBLE = operation("double", "corral.rpc.test.double", Ask, Told, queue="test", service="test service")
OPS = Operations(service="test service", translate=translate).handle(DOUBLE, double)


async def answer(body: object) -> RpcReply:
    return RpcReply.model_validate_json(await OPS.answer(DOUBLE, json.dumps(body).encode(), {}))


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


class LoopBus:
    """A bus whose requests are answered in-process by ``Operations`` (no NATS): ``call`` is the real
    ``Bus.call``; ``raw`` replaces the answer to check what the caller makes of it."""

    call = Bus.call

    def __init__(self, served: Operations, raw: bytes | None = None) -> None:
        self.served = served
        self.raw = raw
        self.asked: list[str] = []

    async def request(self, subject: str, data: bytes, *, timeout: float | None = None, spill: bool = True) -> bytes:
        self.asked.append(subject)
        if self.raw is not None:
            return self.raw
        for op in self.served.operations:
            if op.subject == subject:
                return await self.served.answer(op, data, {})
        raise NoResponders(subject)


async def test_a_call_is_asked_on_the_descriptors_subject_and_returns_the_typed_reply() -> None:
    bus = LoopBus(OPS)
    told = await bus.call(DOUBLE, Ask(n=21))
    assert isinstance(told, Told) and told.doubled == 42
    assert bus.asked == ["corral.rpc.test.double"]


async def test_an_error_reply_is_raised_as_the_api_error_it_describes() -> None:
    with pytest.raises(ApiError) as raised:
        await LoopBus(OPS).call(DOUBLE, Ask(n=13))
    assert (raised.value.error_type, raised.value.message, raised.value.error_code) == (
        "not_found_error",
        "13 is not here",
        "unlucky",
    )


@pytest.mark.parametrize("raw", [b"<html>", b'{"ok": true, "result": {"doubled": "many"}}', b'{"ok": true}'])
async def test_a_reply_that_is_not_the_operations_shape_is_unreadable(raw: bytes) -> None:
    with pytest.raises(UnreadableReply) as raised:
        await LoopBus(OPS, raw=raw).call(DOUBLE, Ask(n=1))
    assert "double" in str(raised.value) and "test service" in str(raised.value)


async def test_an_operation_nobody_handles_has_no_responders() -> None:
    other: Operation[Ask, Told] = operation("other", "corral.rpc.test.other", Ask, Told, queue="t", service="t")
    with pytest.raises(NoResponders):
        await LoopBus(OPS).call(other, Ask(n=1))


def test_an_operation_is_handled_once() -> None:
    with pytest.raises(ValueError, match="double"):
        Operations(service="s").handle(DOUBLE, double).handle(DOUBLE, double)


async def test_health_is_answered_bare_and_read_back_typed() -> None:
    op = health_op("test-service")

    async def report(_request: HealthCheck) -> Health:
        return Health(service="test-service", instance="here:1", status="ok")

    served = Operations(service="test-service").handle(op, report)
    raw = await served.answer(op, b"{}", {})
    assert json.loads(raw) == {
        "service": "test-service",
        "instance": "here:1",
        "status": "ok",
        "details": {},
        "dependencies": {},
    }
    bus = LoopBus(served)
    assert (await bus.call(op, HealthCheck())).instance == "here:1"
    assert bus.asked == ["corral.health.test-service"]


@pytest.mark.parametrize(
    "failure",
    [
        nats.errors.TimeoutError(),
        nats_js_errors.NoStreamResponseError(),
        nats.errors.ConnectionClosedError(),
        StreamUnavailable("CORRAL_SESSIONS"),
    ],
    ids=["timeout", "no-stream-response", "closed", "stream-unavailable"],
)
async def test_a_bus_that_did_not_answer_the_handler_is_a_retryable_overloaded_error(failure: Exception) -> None:
    """During a NATS failover the handler's own publish times out: the caller must learn it may retry
    (with the same Idempotency-Key), not get an ``api_error`` (a 500 at the gateway)."""

    async def publish(request: Ask) -> Told:
        raise failure

    served = Operations(service="session store").handle(DOUBLE, publish)
    reply = RpcReply.model_validate_json(await served.answer(DOUBLE, b'{"n": 1}', {}))
    assert reply.error is not None and reply.error.type == "overloaded_error"
    assert reply.error.details == {"error_code": BUS_UNANSWERED}
    assert "same Idempotency-Key" in reply.error.message and "session store" in reply.error.message
