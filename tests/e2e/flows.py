"""Helpers the e2e tests share: run a turn and collect what the stream showed."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic


async def open_stream(client: anthropic.AsyncAnthropic, session_id: str, **kwargs: Any) -> Any:
    """Open the SSE stream (the SDK returns once the headers arrived)."""
    return await client.beta.sessions.events.stream(session_id, **kwargs)


async def read_until_idle(stream: Any, *, timeout: float = 30.0) -> list[Any]:
    """Events from ``stream`` up to and including the first ``session.status_idle`` that ends a turn."""
    seen: list[Any] = []
    async with asyncio.timeout(timeout):
        async for event in stream:
            seen.append(event)
            if event.type == "session.status_idle" and event.stop_reason.type != "requires_action":
                return seen
    raise AssertionError(f"stream ended before session.status_idle: {[e.type for e in seen]}")


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
