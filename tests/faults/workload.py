"""The clients a fault scenario runs: a few sessions, each driven by one client with the official
``anthropic`` SDK through the gateway, turn after turn, every operation recorded in the history.

Each session's turns are scripted in the embedded model: a ``bash`` call that appends a marker unique
to (session, turn) to ``/workspace/runs.txt`` in the session's sandbox and takes a moment (so faults
land mid-tool as often as mid-model), then a streamed reply. A client sends one ``user.message``
(with an ``Idempotency-Key``, retried with the same key while the outcome is unknown), then reads the
session's events until the turn it started has ended, then sends the next.

With several gateways (``CORRAL_GATEWAY_COUNT``) each client sends each of its requests to the next
gateway in its own turn: its send and the reads that follow it are served by different gateways, and
a request whose outcome was unknown (the gateway refused the connection, timed out, or answered a
5xx) is retried, with the same ``Idempotency-Key``, on another gateway than the one that failed it.
That is what a client given several gateway addresses does when one is killed or paused: it fails
over to the next, and the key makes the retry safe whether or not the failed attempt took effect.

``probe`` measures recovery: after a fault it appends (a title update to a session of its own) until
an append invoked after the fault succeeds.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Final

import anthropic
import httpx

from corral.devstack.stack import Stack
from tests.faults.checker import marker
from tests.faults.history import History, Pending

#: A client gives up on a turn (records it ``unknown`` and stops) after this long: a liveness bound.
TURN_DEADLINE_S: Final = 90.0
#: Per request: a paused service must not hold a client longer than this.
REQUEST_TIMEOUT_S: Final = 5.0
#: Between two attempts of a request whose outcome was unknown, or two reads of a running turn.
RETRY_PAUSE_S: Final = 0.2
READ_PAUSE_S: Final = 0.25
#: Turns scripted per session (more than a soak of a few minutes runs; later turns get default replies).
SCRIPTED_TURNS: Final = 100
#: How long each scripted tool call runs after appending its marker.
TOOL_SECONDS: Final = 0.5
#: Status codes after which a request may or may not have taken effect (retry with the same key).
UNCERTAIN: Final = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


def _sdk(stack: Stack, url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key=stack.api_key, max_retries=0, timeout=REQUEST_TIMEOUT_S)


def _script(token: str) -> dict[str, Any]:
    turns: list[dict[str, Any]] = []
    for k in range(SCRIPTED_TURNS):
        command = f"echo {marker(token, k, 0)} >> /workspace/runs.txt && sleep {TOOL_SECONDS}"
        turns.append({"content": [{"type": "tool_use", "name": "bash", "input": {"command": command}}]})
        text = " ".join(f"turn{k}-word{i}" for i in range(6))
        turns.append({"content": [{"type": "text", "text": text}], "chunk_delay_ms": 40})
    return {"name": f"faults-{token}", "match": f"^{token}", "turns": turns}


class Workload:
    """Sessions and the clients that drive them; ``run`` until ``stop``."""

    def __init__(
        self,
        stack: Stack,
        history: History,
        sdks: list[anthropic.AsyncAnthropic],
        *,
        warm_up_deadline: float = TURN_DEADLINE_S,
    ) -> None:
        self.stack = stack
        self.history = history
        self.sdks = sdks
        self.sdk = sdks[0]
        self.sessions: dict[str, str] = {}  # session id -> its script token
        self.probe_session = ""
        self.turns_ended = 0
        self._requests: collections.Counter[str] = collections.Counter()  # per client: its requests so far
        self._stopping = asyncio.Event()
        self._progress = asyncio.Condition()
        self._warm_up_deadline = warm_up_deadline
        self._warm = asyncio.Event()

    @classmethod
    @asynccontextmanager
    async def open(
        cls, stack: Stack, history: History, clients: int, *, warm_up_deadline: float = TURN_DEADLINE_S
    ) -> AsyncIterator[Workload]:
        """``warm_up_deadline``: how long a turn begun before ``warmed`` may take (the first turns
        provision every session's sandbox at once: with 200 sessions on two cores, longer than
        ``TURN_DEADLINE_S``, and a client that gives up sends no more)."""
        async with AsyncExitStack() as sdks:
            sdks_ = [await sdks.enter_async_context(_sdk(stack, url)) for url in stack.gateway_urls]
            work = cls(stack, history, sdks_, warm_up_deadline=warm_up_deadline)
            await work._set_up(clients)
            yield work

    async def _set_up(self, clients: int) -> None:
        # Set-up is not under test: asked again while the stack still settles from the last scenario
        # (a 503 "the session-store did not answer in time" right after a cluster restart).
        sdk = self.sdk.with_options(max_retries=5)
        agent = await sdk.beta.agents.create(
            name="faults", model="claude-sonnet-4-6", tools=[{"type": "agent_toolset_20260401"}]
        )
        env = await sdk.beta.environments.create(name=f"faults-{uuid.uuid4().hex[:8]}")
        tokens = [uuid.uuid4().hex[:10] for _ in range(clients)]
        document = {"scenarios": [_script(token) for token in tokens]}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.stack.ports.embedded_model}") as model:
            answer = await model.post("/_corral/scripts", json=document, timeout=10)
            assert answer.status_code == 200, answer.text
        for token in tokens:
            session = await sdk.beta.sessions.create(agent=agent.id, environment_id=env.id)
            self.sessions[session.id] = token
        self.probe_session = (await sdk.beta.sessions.create(agent=agent.id, environment_id=env.id)).id

    def via(self, op: Pending) -> anthropic.AsyncAnthropic:
        """The gateway for ``op``: its client's next one in turn, so a retry of a request that failed
        goes to another gateway than the failed attempt (with two or more)."""
        n = self._requests[op.process]
        self._requests[op.process] += 1
        return self.sdks[n % len(self.sdks)]

    def all_sessions(self) -> list[str]:
        return [*self.sessions, self.probe_session]

    async def run(self) -> None:
        async with asyncio.TaskGroup() as clients:
            for n, (session, token) in enumerate(self.sessions.items()):
                clients.create_task(self._client(f"client-{n}", session, token))

    def warmed(self) -> None:
        """The warm-up is over: turns begun from now on get ``TURN_DEADLINE_S``."""
        self._warm.set()

    def deadline(self) -> float:
        """How long a turn begun now may take before its client gives up on it."""
        return TURN_DEADLINE_S if self._warm.is_set() else max(TURN_DEADLINE_S, self._warm_up_deadline)

    def stop(self) -> None:
        """Clients finish the turn they are in and send no more."""
        self._stopping.set()

    async def turns(self, count: int, *, timeout: float) -> None:
        """Wait until ``count`` turns in all have ended since the workload began."""
        async with asyncio.timeout(timeout), self._progress:
            await self._progress.wait_for(lambda: self.turns_ended >= count)

    async def _client(self, process: str, session: str, token: str) -> None:
        for k in range(10**9):
            if self._stopping.is_set():
                return
            deadline = self.deadline()
            event_id = await self.send(process, session, f"{token}: turn {k}", deadline=deadline)
            if event_id is None or not await self.await_turn(process, session, event_id, deadline=deadline):
                return
            async with self._progress:
                self.turns_ended += 1
                self._progress.notify_all()

    async def send(self, process: str, session: str, text: str, *, deadline: float = TURN_DEADLINE_S) -> str | None:
        key = f"faults-{uuid.uuid4()}"
        async with asyncio.timeout(deadline):
            while True:
                op = self.history.invoke(process, "send", session=session, text=text, key=key)
                try:
                    sent = await self.via(op).beta.sessions.events.send(
                        session,
                        events=[{"type": "user.message", "content": [{"type": "text", "text": text}]}],
                        extra_headers={"Idempotency-Key": key},
                    )
                except anthropic.APIStatusError as error:
                    if error.status_code not in UNCERTAIN:
                        self.history.fail(op, error=f"{error.status_code} {error.message}")
                        return None
                    self.history.unknown(op, error=f"{error.status_code}")
                except anthropic.APIConnectionError as error:  # includes timeouts
                    self.history.unknown(op, error=type(error).__name__)
                else:
                    event_id = sent.data[0].id if sent.data else ""
                    self.history.ok(op, event_id=event_id)
                    return event_id
                await asyncio.sleep(RETRY_PAUSE_S)  # a back-off between attempts, not a wait on an outcome

    async def await_turn(self, process: str, session: str, event_id: str, *, deadline: float = TURN_DEADLINE_S) -> bool:
        turn = self.history.invoke(process, "turn", session=session, user_event_id=event_id)
        try:
            async with asyncio.timeout(deadline):
                while True:
                    ended = await self._read(process, session, event_id)
                    if ended is not None:
                        stop_reason, tool_errors = ended
                        self.history.ok(turn, stop_reason=stop_reason, tool_errors=tool_errors)
                        return True
                    await asyncio.sleep(READ_PAUSE_S)  # the turn runs in other processes
        except TimeoutError:
            self.history.unknown(turn, error=f"no end within {deadline:g} s")
            return False

    async def _read(self, process: str, session: str, event_id: str) -> tuple[str, int] | None:
        """One read of the session's events: how the turn begun by ``event_id`` ended, if it has (its stop
        reason, and how many of its tool calls were answered with an error)."""
        op = self.history.invoke(process, "read", session=session)
        try:
            events = [e async for e in self.via(op).beta.sessions.events.list(session, limit=100)]
        except (anthropic.APIStatusError, anthropic.APIConnectionError) as error:
            self.history.unknown(op, error=type(error).__name__)
            return None
        ids = [e.id for e in events]
        self.history.ok(op, event_ids=ids)
        if event_id not in ids:
            return None
        turn = events[ids.index(event_id) + 1 :]
        for n, event in enumerate(turn):
            if event.type == "session.status_idle" and event.stop_reason.type != "requires_action":
                errors = sum(1 for e in turn[:n] if e.type == "agent.tool_result" and e.is_error)
                return str(event.stop_reason.type), errors
        return None

    async def probe(self, process: str = "probe", *, timeout: float = 120.0) -> None:
        """Append to the probe session until an append succeeds (recorded as ``probe`` operations)."""
        async with asyncio.timeout(timeout):
            for n in range(10**9):
                op = self.history.invoke(process, "probe", session=self.probe_session)
                try:
                    await self.via(op).beta.sessions.update(self.probe_session, title=f"probe {n}")
                except (anthropic.APIStatusError, anthropic.APIConnectionError) as error:
                    self.history.unknown(op, error=type(error).__name__)
                    await asyncio.sleep(RETRY_PAUSE_S)  # back-off between attempts
                else:
                    self.history.ok(op)
                    return
