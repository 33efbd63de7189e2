"""The sandbox port: provision a session's sandbox, run a built-in tool in it, cancel a running tool.

``BusSandbox`` asks the sandbox-manager's operations through their descriptors
(``corral.contracts.sandbox.SandboxOps``, with ``Bus.call``). Anything that keeps a call from
being attempted (nothing serves the subject, no reply in time, an ``RpcReply`` error such as
``sandbox_unavailable``) is a ``SandboxError`` with a message fit for the model: the harness turns
it into an error ``agent.tool_result`` so the model can carry on, never into a failed turn. A tool
that ran and failed is a normal ``ToolOutcome`` with ``is_error: true``.

``execute`` listens to the call's heartbeats while it waits, and sends the call again when the
manager serving it goes silent (``corral.harness.redispatch``).
"""

from __future__ import annotations

import logging
from typing import Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from corral.bus import Bus, BusError, NoResponders, UnreadableReply
from corral.contracts import sandbox
from corral.contracts.api.errors import ApiError
from corral.contracts.operation import Operation
from corral.harness.redispatch import OUTCOME_UNKNOWN, Heartbeats, RedispatchPolicy, dispatch

logger = logging.getLogger(__name__)

_Req = TypeVar("_Req", bound=BaseModel)
_Rep = TypeVar("_Rep")

#: How long a ``cancel`` or a ``provision`` reply is waited for.
CONTROL_TIMEOUT_S = 10.0
DEFAULT_REDISPATCH = RedispatchPolicy()


class SandboxError(Exception):
    """The sandbox-manager could not take the call; ``message`` says why, in words for the model."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


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
    ) -> None:
        self._bus = bus
        self._control_timeout_s = control_timeout_s
        self._redispatch = redispatch

    async def provision(self, request: sandbox.Provision) -> sandbox.Provisioned:
        return await self._call(sandbox.SandboxOps.PROVISION, request, self._control_timeout_s)

    async def execute(self, request: sandbox.Execute, *, timeout_s: float) -> sandbox.ToolOutcome:
        """The call's outcome; each send waits up to ``timeout_s`` for its reply while heartbeats last."""
        heartbeats = Heartbeats()

        def on_heartbeat(data: bytes) -> None:
            try:
                heartbeats.beat(sandbox.ExecuteHeartbeat.model_validate_json(data).instance)
            except ValidationError:
                heartbeats.beat()  # unreadable, but someone is serving the call

        async def send() -> sandbox.ToolOutcome:
            return await self._call(sandbox.SandboxOps.EXECUTE, request, timeout_s)

        subject = sandbox.execute_heartbeat(request.session_id, request.tool_use_id)
        async with self._bus.listen(subject, on_heartbeat):
            return await dispatch(
                send,
                heartbeats,
                self._redispatch,
                code_of=lambda exc: exc.code if isinstance(exc, SandboxError) else None,
                outcome_unknown=lambda why: SandboxError(why, code=OUTCOME_UNKNOWN),
                describe={"session_id": request.session_id, "tool_use_id": request.tool_use_id},
            )

    async def cancel(self, request: sandbox.Cancel) -> sandbox.Cancelled:
        return await self._call(sandbox.SandboxOps.CANCEL, request, self._control_timeout_s)

    async def _call(self, op: Operation[_Req, _Rep], request: _Req, timeout_s: float) -> _Rep:
        try:
            return await self._bus.call(op, request, timeout=timeout_s)
        except NoResponders:
            raise SandboxError(
                "The sandbox is unavailable: the sandbox-manager is not running.", code="sandbox_unavailable"
            ) from None
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
