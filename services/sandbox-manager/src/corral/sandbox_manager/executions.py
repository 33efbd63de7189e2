"""``execute`` keyed by ``(session_id, tool_use_id)``: each call runs at most once.

1. A call with the same key already running here is joined (its outcome, ``executed: false``).
2. A recorded outcome is returned as is (``executed: false``). A ``started`` record with nothing
   running here means the manager stopped mid-call: the outcome is unknown, and the call is answered
   with an error instead of being run again.
3. Otherwise the record is claimed (``started``), the tool runs, and the outcome is recorded
   (``done``) before the reply is sent.

A sandbox that cannot be started is not an outcome (nothing ran): the error goes back as an RPC
error and nothing is recorded, so the caller may retry. A sandbox still being prepared after
``provision_wait_s`` (a cold start on a busy engine, an environment image being built) is: the call
is answered "not ready, call again" and that is recorded, so it never runs after its caller gave up
waiting (its caller waits only the tool's timeout plus ``EXECUTE_REPLY_MARGIN_S``). The preparation
goes on, and a later call finds the sandbox ready.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from corral import telemetry
from corral.contracts.sandbox import Execute, TextBlock, ToolOutcome, tool_result_key
from corral.sandbox_manager import metrics
from corral.sandbox_manager.channel import SandboxLost
from corral.sandbox_manager.egress import vaults_of
from corral.sandbox_manager.records import ToolRecord, ToolRecords
from corral.sandbox_manager.replies import AgentReply, parse_reply
from corral.sandbox_manager.sandboxes import Sandbox
from corral.sandbox_manager.sessions import Sessions
from corral.sandbox_manager.settings import SandboxSettings
from corral.sandbox_manager.tools import LocalAnswer, SandboxCall, plan

logger = logging.getLogger(__name__)
_tracer = telemetry.tracer(__name__)

SANDBOX_LOST = (
    "the sandbox stopped while running this tool; a new sandbox will be used for the next call; "
    "files in /workspace were lost"
)
SANDBOX_REMOVED = (
    "the sandbox was removed while running this tool because {violation} (the exec agent never does that: "
    "something in the sandbox wrote to its output); a new sandbox will be used for the next call; files in "
    "/workspace were lost"
)
INTERRUPTED = (
    "this tool call was interrupted: the sandbox-manager restarted while it ran, so its outcome is unknown. "
    "It was not run again, to avoid repeating its side effects; check the sandbox's state before retrying."
)
CANCELLED_BEFORE_START = "cancelled before it started: the tool did not run"
NOT_READY = (
    "this session's sandbox is still being prepared (after a long wait: an environment that lists packages is "
    "installing them, which can take minutes the first time), so this tool call did not run; call the tool again "
    "in a minute"
)


class ShuttingDown(Exception):
    """The manager is stopping: the call is left ``started`` (a re-dispatch is told it was interrupted)."""


class Executions:
    def __init__(self, sessions: Sessions, records: ToolRecords, settings: SandboxSettings) -> None:
        self._sessions = sessions
        self._records = records
        self._settings = settings
        self._inflight: dict[str, asyncio.Future[ToolOutcome]] = {}
        self._running: dict[str, tuple[Sandbox, str]] = {}
        self._cancel_requested: set[str] = set()
        self._stopping = asyncio.Event()

    def shutdown(self) -> None:
        """Stop waiting for running tools (they go on in their containers; nothing more is recorded)."""
        self._stopping.set()

    async def execute(self, request: Execute) -> ToolOutcome:
        key = tool_result_key(request.session_id, request.tool_use_id)
        joined = self._inflight.get(key)
        if joined is not None:
            return _replayed(await asyncio.shield(joined))
        future: asyncio.Future[ToolOutcome] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            outcome = await self._once(request, key)
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            future.exception()
            raise
        else:
            future.set_result(outcome)
            return outcome
        finally:
            del self._inflight[key]
            self._cancel_requested.discard(key)

    async def cancel(self, session_id: str, tool_use_id: str) -> bool:
        key = tool_result_key(session_id, tool_use_id)
        running = self._running.get(key)
        if running is not None:
            sandbox, call_id = running
            await sandbox.channel.cancel(call_id)
            return True
        if key in self._inflight:
            self._cancel_requested.add(key)
            return True
        return False

    async def _once(self, request: Execute, key: str) -> ToolOutcome:
        recorded = await self._records.get(request.session_id, request.tool_use_id)
        if recorded is not None:
            return await self._from_record(request, recorded)
        step = plan(request, self._settings)
        sandbox: Sandbox | None = None
        not_ready = False
        if isinstance(step, SandboxCall):
            try:
                async with asyncio.timeout(self._settings.provision_wait_s):
                    sandbox = (
                        await self._sessions.ensure(
                            request.session_id,
                            request.environment_id,
                            request.environment_config,
                            request.repositories,
                            vaults=vaults_of(request),
                        )
                    ).sandbox
            except TimeoutError:  # ``ensure`` goes on preparing it (shielded); this call does not wait
                not_ready = True
        claimed = await self._records.claim(request.session_id, request.tool_use_id)
        if claimed is None:
            recorded = await self._records.get(request.session_id, request.tool_use_id)
            assert recorded is not None
            return await self._from_record(request, recorded)
        began = time.perf_counter()
        if not_ready:
            logger.info(
                "tool call answered 'not ready': the sandbox is still being prepared",
                extra={"fields": {"session_id": request.session_id, "tool_use_id": request.tool_use_id}},
            )
            content, is_error = [TextBlock(text=NOT_READY)], True
        elif isinstance(step, LocalAnswer):
            content, is_error = [TextBlock(text=step.text)], step.is_error
        else:
            assert sandbox is not None
            if not sandbox.alive:  # it stopped before the call was sent: nothing ran yet, use a new one
                sandbox = (
                    await self._sessions.ensure(
                        request.session_id,
                        request.environment_id,
                        request.environment_config,
                        request.repositories,
                        vaults=vaults_of(request),
                    )
                ).sandbox
            content, is_error = await self._run(sandbox, step, key)
        failures = []
        if sandbox is not None and not not_ready:
            failures, sandbox.repository_failures = sandbox.repository_failures, []
        outcome = ToolOutcome(
            content=content,
            is_error=is_error,
            executed=not not_ready,
            duration_ms=(time.perf_counter() - began) * 1000,
            repository_failures=failures,
        )
        await self._records.finish(request.session_id, request.tool_use_id, outcome, claimed=claimed)
        metrics.EXECS.labels(outcome="not_ready" if not_ready else "error" if is_error else "ok").inc()
        return outcome

    async def _unless_stopping(self, future: asyncio.Future[dict[str, Any]]) -> dict[str, Any]:
        stopping: asyncio.Future[Any] = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({future, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not future.done():
            raise ShuttingDown("the sandbox-manager is stopping; retry the call once it is back")
        return future.result()

    async def _from_record(self, request: Execute, record: ToolRecord) -> ToolOutcome:
        if record.outcome is not None:
            metrics.EXECS.labels(outcome="replayed").inc()
            return _replayed(record.outcome)
        outcome = ToolOutcome(content=[TextBlock(text=INTERRUPTED)], is_error=True, executed=False, duration_ms=0.0)
        await self._records.finish(request.session_id, request.tool_use_id, outcome)
        return outcome

    async def _run(self, sandbox: Sandbox, step: SandboxCall, key: str) -> tuple[list[TextBlock], bool]:
        attributes = {"corral.tool_name": step.tool, "corral.container": sandbox.name}
        with _tracer.start_as_current_span(f"exec {step.tool}", attributes=attributes) as span:
            content, is_error = await self._run_in(sandbox, step, key)
            span.set_attribute("corral.tool_is_error", is_error)
            return content, is_error

    async def _run_in(self, sandbox: Sandbox, step: SandboxCall, key: str) -> tuple[list[TextBlock], bool]:
        notices = [TextBlock(text=n) for n in sandbox.notices]
        sandbox.notices = []
        if key in self._cancel_requested:
            return [*notices, TextBlock(text=CANCELLED_BEFORE_START)], True
        sandbox.inflight += 1
        sandbox.touch()
        call_id = ""
        try:
            async with asyncio.timeout(step.timeout_ms / 1000 + self._settings.reply_grace_s):
                call_id, reply_future = await sandbox.channel.begin(step.tool, step.args, step.timeout_ms)
                self._running[key] = (sandbox, call_id)
                reply: AgentReply = parse_reply(await self._unless_stopping(reply_future))
        except SandboxLost as exc:
            text = SANDBOX_LOST if exc.reason is None else SANDBOX_REMOVED.format(violation=exc.reason)
            return [*notices, TextBlock(text=text)], True
        except TimeoutError:
            logger.warning("sandbox unresponsive; replacing it", extra={"fields": {"container": sandbox.name}})
            if sandbox.session_id is not None:
                await self._sessions.retire(sandbox.session_id, sandbox, "lost", None)
            text = (
                f"the sandbox did not answer within {step.timeout_ms / 1000 + self._settings.reply_grace_s:g} s "
                "and was removed; a new sandbox will be used for the next call; files in /workspace were lost"
            )
            return [*notices, TextBlock(text=text)], True
        finally:
            self._running.pop(key, None)
            sandbox.channel.forget(call_id)
            sandbox.inflight -= 1
            sandbox.touch()
        return [*notices, TextBlock(text=_capped(reply.text, self._settings.output_limit))], reply.is_error


def _replayed(outcome: ToolOutcome) -> ToolOutcome:
    return outcome.model_copy(update={"executed": False})


def _capped(text: str, limit: int) -> str:
    """The agent caps its output already; this bounds what a misbehaving agent could send."""
    slack = limit + 1024
    data = text.encode("utf-8", "replace")
    if len(data) <= slack:
        return text
    return data[:limit].decode("utf-8", "ignore") + f"\n[output truncated: {len(data)} bytes in all]"
