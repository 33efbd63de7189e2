"""Helpers the e2e tests share: run a turn and collect what the stream showed."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import anthropic
import docker
import docker.errors
import httpx

from corral.bus import Bus
from corral.contracts import subjects
from corral.devstack.stack import Stack
from tests.waiting import eventually


async def open_stream(client: anthropic.AsyncAnthropic, session_id: str, **kwargs: Any) -> Any:
    """Open the SSE stream (the SDK returns once the headers arrived)."""
    return await client.beta.sessions.events.stream(session_id, **kwargs)


async def read_until_idle(stream: Any, *, timeout: float = 30.0, any_idle: bool = False) -> list[Any]:
    """Events from ``stream`` up to and including the first ``session.status_idle`` that ends a turn
    (``any_idle``: or waits for the client, ``requires_action``).

    A stream that stalls or ends first fails the test with what it did show and the stream's URL (the
    session id in it is what the e2e report's service logs are picked by)."""
    seen: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            async for event in stream:
                seen.append(event)
                if event.type == "session.status_idle" and (any_idle or event.stop_reason.type != "requires_action"):
                    return seen
    except TimeoutError:
        problem = f"no session.status_idle within {timeout:g} s"
    else:
        problem = "the stream ended before session.status_idle"
    raise AssertionError(f"{problem} on {stream.response.url}; the stream showed {[e.type for e in seen]}")


async def send_text(client: anthropic.AsyncAnthropic, session_id: str, text: str) -> Any:
    sent = await client.beta.sessions.events.send(
        session_id, events=[{"type": "user.message", "content": [{"type": "text", "text": text}]}]
    )
    return sent.data[0]


async def run_turn(client: anthropic.AsyncAnthropic, session_id: str, text: str, **stream_kwargs: Any) -> list[Any]:
    stream = await open_stream(client, session_id, **stream_kwargs)
    async with stream:
        await send_text(client, session_id, text)
        return await read_until_idle(stream)


async def all_events(client: anthropic.AsyncAnthropic, session_id: str) -> list[Any]:
    return [e async for e in client.beta.sessions.events.list(session_id)]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def script(model: httpx.AsyncClient, name: str, *turns: list[dict[str, Any]]) -> None:
    """Install a scenario in the embedded model: for conversations starting with ``name``, these turns."""
    document = {"scenarios": [{"name": name, "match": f"^{name}", "turns": [{"content": t} for t in turns]}]}
    answer = await model.post("/_corral/scripts", json=document)
    assert answer.status_code == 200, answer.text


async def requests_of(model: httpx.AsyncClient, name: str) -> list[dict[str, Any]]:
    """The Messages requests the embedded model received for scenario ``name``."""
    answer = await model.get("/_corral/requests", params={"scenario": name})
    return [entry["body"] for entry in answer.json()["requests"] if not entry["errored"]]


#: The e2e stack's ``CORRAL_HARNESS_LEASE_TTL_S`` (short, so a killed harness's session is picked up soon).
LEASE_TTL_S = "3"


async def lease_holder(bus: Bus, session_id: str) -> str:
    """The harness worker holding the session's lease (waits until one does)."""
    async with asyncio.timeout(10):
        bucket = await bus.bind_key_value(subjects.lease_spec(float(LEASE_TTL_S)))
        assert bucket is not None, "the session-store makes the lease bucket before it is ready"
        while True:
            entry = await bucket.get(session_id)
            if entry is not None:
                return str(json.loads(entry.value)["holder"])
            await asyncio.sleep(0.05)


def log_text(path: Path) -> str:
    """What a service has written to its log file so far."""
    return path.read_text(errors="replace")


async def logged(path: Path, text: str, *, timeout: float = 10.0) -> str:
    """Wait until the service's log file holds ``text`` (another process writes it); the log then."""
    async with asyncio.timeout(timeout):
        while text not in (content := log_text(path)):  # noqa: ASYNC110 (a file another process writes)
            await asyncio.sleep(0.05)
    return content


def _running_in_a_sandbox(docker_host: str, needle: str) -> bool:
    client = docker.DockerClient(base_url=docker_host)
    try:
        for container in client.containers.list():
            try:
                processes = container.top(ps_args="-eo pid,args")["Processes"] or []
            except docker.errors.APIError:
                continue  # stopped while we looked
            if any(needle in " ".join(row) for row in processes):
                return True
        return False
    finally:
        client.close()


async def running_in_a_sandbox(stack: Stack, needle: str, *, timeout: float = 60.0) -> None:
    """Wait until a process whose command line holds ``needle`` runs in one of the stack's sandboxes
    (a tool call has started its command; nothing on the bus announces that moment)."""
    await eventually(lambda: asyncio.to_thread(_running_in_a_sandbox, stack.docker_host, needle), timeout=timeout)
