"""B3's measurements for ``bench/sandbox.py``: time to the first token through Corral (session create +
user.message -> first delta on the stream) and straight from the model (its baseline), both minus the
scripted model TTFT; and, for the samples given a ``Steps``, where that time went step by step."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Protocol

import httpx
from report import ok

from corral.devstack.stack import Stack

#: How long the scripted model takes to its first byte in the TTFT samples (B3's "fake model TTFT").
MODEL_TTFT_MS = 500
TTFT_SCENARIO = "bench-ttft"


class Releases(Protocol):
    async def release(self, session_id: str) -> None: ...


async def script_model_ttft(stack: Stack) -> None:
    """Make the embedded model answer the TTFT samples after ``MODEL_TTFT_MS``, with plain text."""
    turn = {"content": [{"type": "text", "text": "Hello there."}], "first_byte_delay_ms": MODEL_TTFT_MS}
    scenario = {"name": TTFT_SCENARIO, "match": f"^{TTFT_SCENARIO}", "turns": [turn]}
    url = f"http://127.0.0.1:{stack.ports.embedded_model}/_corral/scripts"
    async with httpx.AsyncClient(timeout=10) as model:
        answer = await model.post(url, json={"scenarios": [scenario]})
    if answer.status_code != 200:
        raise SystemExit(f"the embedded model refused the TTFT script: {answer.text}")


@dataclass
class Steps:
    """Where the samples' milliseconds went, per step, in the order the steps happen. The POST and
    the way from it to the model request overlap: the wake-up is under way before the POST's answer."""

    ms: dict[str, list[float]] = field(default_factory=dict)

    def add(self, step: str, ms: float) -> None:
        self.ms.setdefault(step, []).append(ms)


class Ttft:
    """Session create + POST user.message -> first ``event_delta`` / ``agent.message`` frame, minus
    the scripted model TTFT; a fresh session per sample. ``model`` is the embedded model, whose record
    of the requests it received times the steps."""

    def __init__(self, http: httpx.AsyncClient, sandboxes: Releases, model: httpx.AsyncClient) -> None:
        self.http = http
        self.sandboxes = sandboxes
        self.model = model

    async def sample(self, agent_id: str, environment_id: str, *, release: bool, steps: Steps | None = None) -> float:
        body = {"agent": agent_id, "environment_id": environment_id}
        wall0, t0 = time.time(), time.perf_counter()
        sid = ok(await self.http.post("/v1/sessions", json=body))["id"]
        created = time.perf_counter()
        text = f"{TTFT_SCENARIO}: hello"
        message = {"events": [{"type": "user.message", "content": [{"type": "text", "text": text}]}]}
        first: float | None = None
        url = f"/v1/sessions/{sid}/events/stream"
        async with (
            asyncio.timeout(60),
            self.http.stream("GET", url, params={"event_deltas[]": "agent.message"}) as stream,
        ):
            opened = time.perf_counter()
            ok(await self.http.post(f"/v1/sessions/{sid}/events", json=message))
            answered = time.perf_counter()
            async for raw in stream.aiter_lines():
                if not raw.startswith("event: "):
                    continue
                kind = raw[7:]
                if first is None and kind in ("event_delta", "agent.message"):
                    first = time.perf_counter()
                if kind == "session.status_idle":
                    break
        if first is None:
            raise SystemExit(f"session {sid}: the turn ended without a message")
        if steps is not None:
            # the model's clock is the wall clock: its request's arrival on ours
            arrived = t0 + await self._arrival(after=wall0 + (opened - t0)) - wall0
            steps.add("session create (POST /v1/sessions)", (created - t0) * 1000)
            steps.add("the stream opened (GET .../events/stream, headers)", (opened - created) * 1000)
            steps.add("POST user.message, answered", (answered - opened) * 1000)
            steps.add("POST user.message -> the model request", (arrived - opened) * 1000)
            steps.add(
                "the model request -> first token on the stream, minus TTFT", (first - arrived) * 1000 - MODEL_TTFT_MS
            )
        if release:
            await self.sandboxes.release(sid)  # waits for the turn's provisioning, then removes it
        return (first - t0) * 1000 - MODEL_TTFT_MS

    async def _arrival(self, *, after: float) -> float:
        """When the model received the first TTFT request sent after ``after`` (wall clock)."""
        answer = await self.model.get("/_corral/requests", params={"scenario": TTFT_SCENARIO})
        arrivals = sorted(r["received_at"] for r in answer.json()["requests"] if r["received_at"] >= after)
        if not arrivals:
            raise SystemExit("the embedded model recorded no request for the TTFT sample")
        return float(arrivals[0])


async def direct_ttft(url: str, samples: int) -> list[float]:
    """B3's baseline: a streamed request straight to the model -> its first delta, minus the model's TTFT."""
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": f"{TTFT_SCENARIO}: direct"}],
    }
    headers = {"x-api-key": "bench", "anthropic-version": "2023-06-01"}
    out: list[float] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as model:
        for _ in range(samples + 1):
            t0 = time.perf_counter()
            async with model.stream("POST", "/v1/messages", json=body) as response:
                async for raw in response.aiter_lines():
                    if raw.startswith("event: content_block_delta"):
                        out.append((time.perf_counter() - t0) * 1000 - MODEL_TTFT_MS)
                        break
    return out[1:]  # the first opened the connection
