"""A bus that does not answer (NATS paused, as a JetStream cluster is for a moment while a stream's
leader moves) reaches the client as a 503 it retries with the same ``Idempotency-Key``, never a 500."""

from __future__ import annotations

import os
import secrets
import signal

import anthropic
import httpx
import pytest

from corral.devstack.stack import Stack

pytestmark = pytest.mark.e2e


def assert_retryable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["type"] == "error" and body["request_id"] == response.headers["request-id"]
    assert body["error"]["type"] == "overloaded_error"
    assert "retry" in body["error"]["message"] and "Idempotency-Key" in body["error"]["message"]
    assert int(response.headers["retry-after"]) > 0 and response.headers["x-should-retry"] == "true"


async def test_requests_while_nats_does_not_answer_are_503s_to_retry_with_the_same_key(
    stack: Stack, client: anthropic.AsyncAnthropic, http: httpx.AsyncClient
) -> None:
    agent = await client.beta.agents.create(name="bus-outage", model="claude-sonnet-4-6")  # the key is cached
    body = {"name": "made while the bus was paused", "model": "claude-sonnet-4-6"}
    key = {"idempotency-key": "bus-outage-" + secrets.token_hex(8)}
    with_key = (await http.post("/v1/agents", json=body, headers=key)).status_code
    assert with_key == 200  # the key works before the outage; the one for the outage is new
    key = {"idempotency-key": "bus-outage-" + secrets.token_hex(8)}

    pid = stack.kill("nats", signal.SIGSTOP)
    try:
        claimed = await http.post("/v1/agents", json=body, headers=key)  # the claim's KV write times out
        update = await http.post(f"/v1/agents/{agent.id}", json={"version": agent.version, "system": "x"})
    finally:
        os.kill(pid, signal.SIGCONT)
    assert_retryable(claimed)
    assert_retryable(update)

    # the retry with the same key runs once (taking over the claim the unanswered request left), and
    # is replayed after that
    made = await http.post("/v1/agents", json=body, headers=key)
    assert made.status_code == 200, made.text
    again = await http.post("/v1/agents", json=body, headers=key)
    assert again.headers.get("idempotent-replayed") == "true" and again.json()["id"] == made.json()["id"]
