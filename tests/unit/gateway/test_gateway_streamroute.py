"""The event stream served in front of FastAPI (``corral.gateway.streamroute``) answers every request
as the FastAPI route behind the full middleware stack does (which serves it while tracing is on):
same status, error body, headers; counted under the route's template."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import nats.errors
import pytest
from gateway_fakes import API_KEY, FakeFeed, FakeProbe, FakeStore, settings

from corral.contracts.api.errors import not_found
from corral.contracts.rpc import Op
from corral.gateway.app import GatewayApp, create_app
from corral.gateway.state import Backends
from corral.telemetry.metrics import REGISTRY

STREAM = "/v1/sessions/sesn_01SSS/events/stream"
ROUTE = "/v1/sessions/{session_id}/events/stream"
KNOWN = {Op.SESSIONS_GET: {"type": "session", "id": "sesn_01SSS"}}
DELETED = json.dumps({"type": "corral.session_deleted", "deleted_at": "2026-01-01T00:00:03.000000Z"}).encode()


def app_for(store: FakeStore | None, *, in_front: bool, **overrides: Any) -> GatewayApp:
    backends = None if store is None else Backends(store=store, feed=FakeFeed(records=[DELETED]), probe=FakeProbe())
    app = create_app(settings(**overrides), backends=backends)
    app.streams_in_front = in_front
    return app


async def answer(app: GatewayApp, path: str, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        return await client.get(path, headers=headers)


def comparable(response: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    """The status, the body without its request id (a stream's: its event names; the deletion frame's
    id is made when it is sent), and the headers that are not per request."""
    assert response.headers["request-id"].startswith("req_")
    body: Any = [line for line in response.text.splitlines() if line.startswith("event:")]  # a stream
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        assert body.pop("request_id") == response.headers["request-id"]
        message = body["error"]["message"].replace(response.headers["request-id"], "req_...")
        body["error"]["message"] = re.sub(r"retry in [0-9.]+ s", "retry in ... s", message)  # a 429's wait
    kept = {
        k: v
        for k, v in response.headers.items()
        if k not in ("request-id", "content-length", "retry-after", "retry-after-ms")
    }
    return response.status_code, body, kept


def count(status: int) -> float:
    labels = {"route": ROUTE, "method": "GET", "status": str(status)}
    return REGISTRY.get_sample_value("corral_gateway_requests_total", labels) or 0.0


CASES: dict[str, tuple[dict[str, Any] | None, str, dict[str, str], dict[str, Any]]] = {
    # name: (store replies, or None for no backends; path; headers; settings)
    "the stream": (KNOWN, STREAM, {}, {}),
    "not connected yet (503)": (None, STREAM, {}, {}),
    "no API key (401)": (KNOWN, STREAM, {"x-api-key": ""}, {}),
    "an unknown API key (401)": (KNOWN, STREAM, {"x-api-key": "sk-corral-nope"}, {}),
    "another workspace (403)": (KNOWN, STREAM, {"anthropic-workspace-id": "wrkspc_01OTHER"}, {}),
    "not a session id (404)": (KNOWN, "/v1/sessions/agent_01X/events/stream", {}, {}),
    "an unknown session (404)": ({Op.SESSIONS_GET: not_found("session", "sesn_01SSS")}, STREAM, {}, {}),
    "bad event_deltas[] (400)": (KNOWN, STREAM + "?event_deltas[]=agent.tool_use", {}, {}),
    "content-length not a number (400)": (KNOWN, STREAM, {"content-length": "ten"}, {}),
    "content-length over the limit (413)": (KNOWN, STREAM, {"content-length": "5000"}, {}),
    "the bus did not answer (503)": ({Op.SESSIONS_GET: nats.errors.TimeoutError()}, STREAM, {}, {}),
    "a failure nobody expected (500)": ({Op.SESSIONS_GET: RuntimeError("boom")}, STREAM, {}, {}),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_the_stream_in_front_answers_as_the_fastapi_route_does(case: str) -> None:
    replies, path, headers, overrides = CASES[case]
    answers = []
    for in_front in (False, True):
        store = None if replies is None else FakeStore(replies=dict(replies))
        before = {status: count(status) for status in (200, 400, 401, 403, 404, 413, 500, 503)}
        response = await answer(app_for(store, in_front=in_front, **overrides), path, {"x-api-key": API_KEY, **headers})
        answers.append(comparable(response))
        if in_front:  # counted under the template (behind FastAPI, a refused content-length is "unmatched")
            assert count(response.status_code) == before[response.status_code] + 1
    assert answers[0] == answers[1]


async def test_a_key_over_its_rate_limit_is_a_429_in_front_too() -> None:
    answers = []
    for in_front in (False, True):
        app = app_for(FakeStore(replies=KNOWN), in_front=in_front, rate_limit_rps=1e-9, rate_limit_burst=1)
        await answer(app, STREAM, {"x-api-key": API_KEY})
        answers.append(comparable(await answer(app, STREAM, {"x-api-key": API_KEY})))
    assert answers[0][0] == 429
    assert answers[0] == answers[1]


async def test_other_methods_and_paths_still_go_through_fastapi() -> None:
    app = app_for(FakeStore(replies=KNOWN), in_front=True)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        posted = await client.post(STREAM, headers={"x-api-key": API_KEY})
        slashed = await client.get(STREAM + "/", headers={"x-api-key": API_KEY}, follow_redirects=False)
    assert posted.status_code == 405
    assert posted.headers["allow"] == "GET"
    assert slashed.status_code in (307, 404)
