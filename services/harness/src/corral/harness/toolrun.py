"""Running a session's tool calls in its sandbox.

- **Provisioning**: when a run starts a model request and the agent has a built-in tool, ``Provision``
  is sent in a background task owned by the run (its result logged, never awaited): the first model
  request never waits for a container, and ``Execute`` provisions anyway if it is not ready yet.
- **Execution**: the calls of one plan run one at a time, in the model's order (``Execute``, keyed by
  the ``agent.tool_use`` event id, so an execute re-sent after a crash returns the recorded outcome;
  the sandbox port re-sends it when its manager is lost, see ``redispatch``), each result appended
  as soon as it arrives. A call the sandbox cannot take becomes an error result the model can act on.
  After a call of a session with vaults, the credential hosts its sandbox could not reach are asked
  of the credential-proxy and logged as ``credential_host_unreachable_error`` (``credentialhosts``).
- **MCP calls** (an ``agent.mcp_tool_use``) go to ``corral.harness.mcp`` (the credential-proxy) instead.
- **Web tools**: ``web_fetch`` and ``web_search`` are asked of the credential-proxy (``webtools``).
- **Interrupts**: a ``user.interrupt`` logged during a call stops waiting for it, sends ``Cancel``
  (best effort) and answers the call "interrupted"; the calls not run yet are left to the next
  decision, which closes them and ends the turn.
"""

from __future__ import annotations

import asyncio
import logging
import time

from corral.contracts import sandbox
from corral.contracts.api.environments import Environment
from corral.contracts.api.events import HarnessEvent
from corral.harness import crashpoints, events, metrics
from corral.harness.crashpoints import Crashpoint
from corral.harness.credentialhosts import CredentialHosts, unreachable_errors
from corral.harness.decide import INTERRUPTED, Plan, ToolCall
from corral.harness.environments import Environments
from corral.harness.fold import SessionFold
from corral.harness.interrupts import Stop, unless_interrupted
from corral.harness.mcp import McpTools, mcp_unavailable
from corral.harness.runstate import SessionRun, TurnState, agent_of, log_fields, repositories_of, vault_ids_of
from corral.harness.sandbox import Sandbox, SandboxError
from corral.harness.tools import toolbox
from corral.harness.toolspans import describe_tool_span, tool_span
from corral.harness.webtools import WEB_TOOLS, Web, run_web_tool

logger = logging.getLogger(__name__)


def _bash_timeout_ms(call: ToolCall) -> int | None:
    value = call.input.get("timeout_ms") if call.name == "bash" else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


class ToolRunner:
    """Provisions, executes and cancels a session's tool calls (``sandbox``: ``None`` when the
    deployment has none, and every call is answered with an error saying so)."""

    def __init__(
        self,
        *,
        sandbox: Sandbox | None,
        environments: Environments | None,
        cancel_timeout_s: float,
        crashpoint: Crashpoint,
        mcp: McpTools | None = None,
        web: Web | None = None,
        credential_hosts: CredentialHosts | None = None,
    ) -> None:
        self._sandbox = sandbox
        self._credential_hosts = credential_hosts
        self._mcp = mcp
        self._web = web
        self._environments = environments
        self._cancel_timeout_s = cancel_timeout_s
        self._crash = crashpoint

    async def run_tools(self, run: SessionRun, plan: Plan, prelude: list[HarnessEvent]) -> int:
        """Run the plan's tool calls one by one (in the model's order), appending each result as it
        arrives. Stops early on an interrupt; the next decision ends the turn. Returns the stream
        sequence of the last append."""
        turn = run.turn
        last_seq = run.log.fold.last_seq
        environment = await self.environment(run.log.fold, turn)
        if prelude:  # before any call runs: fenced on the log the decision saw
            last_seq = (await run.append(prelude, decided=True)).last_seq
        for call in plan.execute:
            if turn.interrupted.is_set():
                break
            batch: list[HarnessEvent]
            with tool_span(run.session_id, call) as span:
                if call.mcp_server is not None:  # an MCP server's tool, called by the credential-proxy
                    batch = await self._mcp.call(run, call) if self._mcp is not None else [mcp_unavailable(call.id)]
                    kind = "mcp"
                elif call.name in WEB_TOOLS and self._web is not None:  # run by the credential-proxy, not the sandbox
                    agent = agent_of(run.log.fold.session)
                    batch = [await run_web_tool(self._web, run.session_id, agent, call, turn.interrupted)]
                    kind = "web"
                else:
                    batch = await self._execute(run.session_id, environment, call, turn.interrupted, run.log.fold)
                    kind = "builtin"
                describe_tool_span(span, kind, batch)
            metrics.tool_answered(kind, batch)
            self._crash(crashpoints.AFTER_TOOL_EXECUTED)
            last_seq = (await run.append(batch)).last_seq
        return last_seq

    async def environment(self, fold: SessionFold, turn: TurnState) -> Environment | None:
        """The session's environment, read once per run (``None``: deleted or unreadable)."""
        if not turn.environment_read and self._environments is not None and fold.environment_id is not None:
            turn.environment = await self._environments.get(fold.environment_id)
            turn.environment_read = True
        return turn.environment

    async def _execute(
        self,
        session_id: str,
        environment: Environment | None,
        call: ToolCall,
        interrupted: asyncio.Event,
        fold: SessionFold,
    ) -> list[HarnessEvent]:
        """The ``agent.tool_result`` of one call: the sandbox's outcome, an error the model can act on
        when the sandbox could not take the call, or "interrupted" (after a ``Cancel``); preceded by a
        ``session.error`` for each repository the call's provisioning could not clone."""
        if self._sandbox is None:
            return [
                events.tool_error(call.id, "No sandbox is configured in this deployment, so the tool could not run.")
            ]
        if environment is None:
            return [
                events.tool_error(
                    call.id,
                    "The session's environment could not be read (it was deleted, or the catalog is unavailable), "
                    "so the tool could not run. Try again later.",
                )
            ]
        request = sandbox.Execute(
            session_id=session_id,
            tool_use_id=call.id,
            name=call.name,
            input=call.input,
            environment_id=environment.id,
            environment_config=environment.config,
            repositories=repositories_of(fold.session),
            workspace_id=fold.workspace_id or None,
            vault_ids=vault_ids_of(fold.session),
        )
        started = time.monotonic()
        timeout_s = sandbox.execute_reply_timeout_s(_bash_timeout_ms(call))
        fields = log_fields(session_id, tool_use_id=call.id, tool=call.name)
        try:
            outcome = await unless_interrupted(self._sandbox.execute(request, timeout_s=timeout_s), interrupted)
        except SandboxError as err:
            logger.warning("sandbox could not take the tool call: %s", err.message, extra={**fields, "code": err.code})
            return [events.tool_error(call.id, err.message)]
        if outcome is Stop.INTERRUPTED:
            logger.info("tool call interrupted", extra=fields)
            await self.cancel(session_id, call.id)
            return [events.tool_error(call.id, INTERRUPTED)]
        logger.info(
            "tool call answered",
            extra=log_fields(
                session_id,
                tool_use_id=call.id,
                tool=call.name,
                is_error=outcome.is_error,
                executed=outcome.executed,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
            ),
        )
        content = [block.model_dump(mode="json") for block in outcome.content]
        # A repository that could not be cloned when this call provisioned the sandbox: the session goes
        # on without it (retry_status ``retrying``, as the API defines these errors).
        failures = [
            events.session_error(f.type, f.message, "retrying", repository_url=f.url)
            for f in outcome.repository_failures
        ]
        if fold.workspace_id and vault_ids_of(fold.session):  # credentials at egress: hosts not reached
            failures += await unreachable_errors(self._credential_hosts, session_id)
        return [*failures, events.tool_result(call.id, content, is_error=outcome.is_error)]

    async def cancel(self, session_id: str, tool_use_id: str) -> None:
        """Ask the sandbox-manager to stop a running call (best effort: failures are logged)."""
        if self._sandbox is None:
            return
        fields = log_fields(session_id, tool_use_id=tool_use_id)
        try:
            async with asyncio.timeout(self._cancel_timeout_s):
                cancelled = await self._sandbox.cancel(sandbox.Cancel(session_id=session_id, tool_use_id=tool_use_id))
        except (SandboxError, TimeoutError) as exc:
            logger.warning("could not cancel the tool call: %s", exc, extra=fields)
            return
        logger.info("cancel sent", extra=log_fields(session_id, tool_use_id=tool_use_id, cancelled=cancelled.cancelled))

    async def start_provisioning(self, session_id: str, fold: SessionFold, turn: TurnState) -> None:
        """Start the session's sandbox in the background (once per run) if its agent has built-in tools."""
        if turn.provisioning is not None or self._sandbox is None:
            return
        if not toolbox(agent_of(fold.session)).needs_sandbox:
            return
        environment = await self.environment(fold, turn)
        if environment is None:
            logger.info("no environment to provision a sandbox from", extra=log_fields(session_id))
            return
        request = sandbox.Provision(
            session_id=session_id,
            environment_id=environment.id,
            environment_config=environment.config,
            repositories=repositories_of(fold.session),
            workspace_id=fold.workspace_id or None,
            vault_ids=vault_ids_of(fold.session),
        )
        turn.provisioning = asyncio.create_task(self._provision(request))

    @staticmethod
    def stop_provisioning(turn: TurnState) -> None:
        """The run ends: stop waiting for its provisioning (the request is out; the manager carries on)."""
        if turn.provisioning is not None and not turn.provisioning.done():
            turn.provisioning.cancel()

    async def _provision(self, request: sandbox.Provision) -> None:
        assert self._sandbox is not None
        fields = log_fields(request.session_id, environment_id=request.environment_id)
        try:
            provisioned = await self._sandbox.provision(request)
        except SandboxError as err:
            logger.warning("provisioning the sandbox failed: %s", err.message, extra=fields)
        except Exception:  # a background task: never let a failure go unseen, never let it end the run
            logger.warning("provisioning the sandbox failed", extra=fields, exc_info=True)
        else:
            logger.info(
                "sandbox provisioned",
                extra=log_fields(
                    request.session_id,
                    container_id=provisioned.container_id,
                    ready_ms=provisioned.ready_ms,
                    from_pool=provisioned.from_pool,
                    notices=provisioned.notices,
                ),
            )
