"""The sandbox port: provision a session's sandbox, run a built-in tool in it, cancel a running tool.

``BusSandbox`` asks the sandbox-manager's operations through their descriptors
(``corral.contracts.sandbox.SandboxOps``, with ``Bus.call``). Anything that keeps a call from
being attempted (nothing serves the subject, no reply in time, an ``RpcReply`` error such as
``sandbox_unavailable``) is a ``SandboxError`` with a message fit for the model: the harness turns
it into an error ``agent.tool_result`` so the model can carry on, never into a failed turn. A tool
that ran and failed is a normal ``ToolOutcome`` with ``is_error: true``.

``execute`` listens to the call's heartbeats while it waits, and sends the call again when the
manager serving it goes silent (``corral.harness.redispatch``).

Every call goes to the sandbox host holding the session's sandbox (``corral.harness.placement``:
placed on first use, from the hosts' advertisements), on that host's own subject. A host that
nothing serves any more (its manager died with its engine) is left: the session is placed on another
host and the call sent there, once per host; the workspace stayed on the lost host, and the new
host's outcome starts with a notice saying so. A call that was running on the lost host is answered
by the new one from its record ("outcome unknown": a tool error, never a second run). With no host
advertised, calls go to the ``sandbox-manager`` queue group as before.

When no manager answers at all (no advertised host serves the call, nor the queue group: every
manager is stopped or restarting), ``provision`` and ``execute`` wait for one to come back
(``ManagerWait``: asked again with a growing pause, for up to ``wait_s``, logged once at warning)
instead of failing the tool call at once; nothing was sent to a manager, so nothing ran. The wait is
the call's: a ``user.interrupt`` (``unless_interrupted``) or the turn's cancellation stops it. Only
when none is back in time is the call a ``SandboxError`` saying the tool did not run and what to do.
A host that died while another still answers is left at once (above), never waited for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from corral.bus import Bus, BusError, NoResponders, UnreadableReply
from corral.contracts import sandbox
from corral.contracts.api.errors import ApiError
from corral.contracts.operation import Operation
from corral.harness.placement import Placements
from corral.harness.redispatch import OUTCOME_UNKNOWN, UNAVAILABLE, Heartbeats, RedispatchPolicy, dispatch

logger = logging.getLogger(__name__)

_Req = TypeVar("_Req", bound=BaseModel)
_Rep = TypeVar("_Rep")
_T = TypeVar("_T")

#: How long a ``cancel`` or a ``provision`` reply is waited for.
CONTROL_TIMEOUT_S = 10.0
DEFAULT_REDISPATCH = RedispatchPolicy()


@dataclass(frozen=True)
class ManagerWait:
    """How a call that no sandbox-manager answers waits for one to come back."""

    #: Longest wait, from the first "no manager", before the call fails (0: fail at once).
    wait_s: float = 30.0
    #: Pause before the first retry; each further pause doubles, up to ``max_retry_s``.
    first_retry_s: float = 0.25
    max_retry_s: float = 2.0


DEFAULT_MANAGER_WAIT = ManagerWait()


class SandboxError(Exception):
    """The sandbox-manager could not take the call; ``message`` says why, in words for the model."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class _NoManager(SandboxError):
    """Nothing serves the call: no advertised host, nor the ``sandbox-manager`` queue group."""

    def __init__(self) -> None:
        super().__init__("The sandbox is unavailable: the sandbox-manager is not running.", code=UNAVAILABLE)


class _HostGone(Exception):
    """Nothing serves the session's host's subject (its manager stopped)."""


class Sandbox(Protocol):
    async def provision(self, request: sandbox.Provision) -> sandbox.Provisioned: ...

    async def execute(self, request: sandbox.Execute, *, timeout_s: float) -> sandbox.ToolOutcome: ...

    async def cancel(self, request: sandbox.Cancel) -> sandbox.Cancelled: ...


class BusSandbox:
    def __init__(
        self,
        bus: Bus,
        *,
        control_timeout_s: float = CONTROL_TIMEOUT_S,
        redispatch: RedispatchPolicy = DEFAULT_REDISPATCH,
        manager_wait: ManagerWait = DEFAULT_MANAGER_WAIT,
    ) -> None:
        self._bus = bus
        self._control_timeout_s = control_timeout_s
        self._redispatch = redispatch
        self._manager_wait = manager_wait
        self.placements = Placements(bus)

    async def provision(self, request: sandbox.Provision) -> sandbox.Provisioned:
        async def send() -> sandbox.Provisioned:
            return await self._placed(
                sandbox.SandboxOps.PROVISION, request, request.session_id, self._control_timeout_s
            )

        return await self._once_a_manager_answers(send, "provision", {"session_id": request.session_id})

    async def execute(self, request: sandbox.Execute, *, timeout_s: float) -> sandbox.ToolOutcome:
        """The call's outcome; each send waits up to ``timeout_s`` for its reply while heartbeats last."""
        heartbeats = Heartbeats()

        def on_heartbeat(data: bytes) -> None:
            try:
                heartbeats.beat(sandbox.ExecuteHeartbeat.model_validate_json(data).instance)
            except ValidationError:
                heartbeats.beat()  # unreadable, but someone is serving the call

        async def send() -> sandbox.ToolOutcome:
            return await self._placed(sandbox.SandboxOps.EXECUTE, request, request.session_id, timeout_s)

        describe: dict[str, object] = {"session_id": request.session_id, "tool_use_id": request.tool_use_id}

        async def watched() -> sandbox.ToolOutcome:
            return await dispatch(
                send,
                heartbeats,
                self._redispatch,
                code_of=lambda exc: exc.code if isinstance(exc, SandboxError) else None,
                outcome_unknown=lambda why: SandboxError(why, code=OUTCOME_UNKNOWN),
                describe=describe,
            )

        subject = sandbox.execute_heartbeat(request.session_id, request.tool_use_id)
        async with self._bus.listen(subject, on_heartbeat):
            # around ``dispatch``, not inside its send: a wait for a manager is no silence of one serving the call
            return await self._once_a_manager_answers(watched, "tool call", describe)

    async def cancel(self, request: sandbox.Cancel) -> sandbox.Cancelled:
        host = await self._placement_of(request.session_id)
        op = sandbox.SandboxOps.CANCEL if host is None else sandbox.on_host(sandbox.SandboxOps.CANCEL, host)
        return await self._call(op, request, self._control_timeout_s)

    async def _once_a_manager_answers(
        self, attempt: Callable[[], Awaitable[_T]], what: str, describe: dict[str, object]
    ) -> _T:
        """``attempt()``'s result, asking again while no sandbox-manager answers (``_NoManager``), for up
        to ``ManagerWait.wait_s``; then a ``SandboxError`` saying the call did not run and what to do."""
        policy = self._manager_wait
        deadline: float | None = None
        pause = policy.first_retry_s
        while True:
            try:
                return await attempt()
            except _NoManager:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + policy.wait_s
                    if policy.wait_s > 0:
                        logger.warning(
                            "no sandbox-manager answers; the %s waits up to %g s for one to come back",
                            what,
                            policy.wait_s,
                            extra={"fields": describe},
                        )
                if now >= deadline:
                    raise SandboxError(_no_manager_message(policy.wait_s), code=UNAVAILABLE) from None
                await asyncio.sleep(min(pause, deadline - now))
                pause = min(pause * 2, policy.max_retry_s)

    async def _placement_of(self, session_id: str, *, gone: frozenset[str] | None = None) -> str | None:
        try:
            if gone is None:
                return await self.placements.placed(session_id)
            return await self.placements.host_for(session_id, gone=gone)
        except BusError as exc:
            raise SandboxError(
                f"The sandbox's host could not be looked up ({type(exc).__name__}).", code="sandbox_unavailable"
            ) from exc

    async def _placed(self, op: Operation[_Req, _Rep], request: _Req, session_id: str, timeout_s: float) -> _Rep:
        """``op`` on the session's host; on another host when nothing serves that one any more."""
        gone: frozenset[str] = frozenset()
        while True:
            host = await self._placement_of(session_id, gone=gone)
            if host is None:
                return await self._call(op, request, timeout_s)
            try:
                return await self._call(sandbox.on_host(op, host), request, timeout_s, host_gone=True)
            except _HostGone:
                logger.warning(
                    "nothing serves the session's sandbox host; placing it elsewhere",
                    extra={"fields": {"session_id": session_id, "host": host}},
                )
                gone = gone | {host}

    async def _call(
        self, op: Operation[_Req, _Rep], request: _Req, timeout_s: float, *, host_gone: bool = False
    ) -> _Rep:
        try:
            return await self._bus.call(op, request, timeout=timeout_s)
        except NoResponders:
            if host_gone:
                raise _HostGone() from None
            raise _NoManager() from None
        except TimeoutError:
            raise SandboxError(
                f"The sandbox-manager did not answer within {timeout_s:g} s.", code="sandbox_timeout"
            ) from None
        except ApiError as exc:
            raise SandboxError(f"The sandbox could not run the tool: {exc.message}", code=exc.error_code) from exc
        except UnreadableReply as exc:
            raise SandboxError(
                f"The sandbox-manager sent an unreadable reply to {op.name} ({exc.errors} validation errors)."
            ) from exc
        except BusError as exc:
            raise SandboxError(f"The sandbox-manager could not be reached ({type(exc).__name__}).") from exc


def _no_manager_message(waited_s: float) -> str:
    waited = f" and none came back within {waited_s:g} s" if waited_s > 0 else ""
    return (
        f"The sandbox is unavailable: no sandbox-manager is running{waited}, so the tool did not run. "
        "Try the tool call again in a minute; if it keeps failing, tell the user the sandbox service is down "
        "and its operator should start the sandbox-manager."
    )
