"""MCP tools in a session's turns: their lists (cached per session) and their calls, through the
credential-proxy (the harness never connects to an MCP server itself).

- **Lists.** Before each model request, ``McpTools.prepare`` makes sure the tools of every MCP server
  the agent uses are known: asked of the credential-proxy (``McpOps.LIST``) the first time a session
  needs them, then kept in this process, keyed by session, agent version, server name and URL (a new
  agent version, or a session update that changes the URL, lists again). The list is put on the run
  (``TurnState.mcp_tools``) for the model request and for reading the model's calls. A server that
  cannot be listed (down, refused, timed out: ``CORRAL_HARNESS_MCP_LIST_TIMEOUT_S``) offers no tools
  this time and is reported once per run as a ``session.error`` ``mcp_connection_failed_error`` (or
  ``mcp_authentication_failed_error``) naming it (``retry_status: exhausted``: the turn goes on
  without it, and the next turn tries again). A failed list is not cached.
- **Calls.** ``McpTools.call`` asks the credential-proxy (``McpOps.CALL``) and returns the call's
  ``agent.mcp_tool_result``. A call that fails at the connection is an error result the model can
  act on, after a ``session.error`` naming the server. The wait is bounded
  (``CORRAL_HARNESS_MCP_CALL_TIMEOUT_S``) and a ``user.interrupt`` stops it at once: the result says
  "interrupted by the user", and the session's MCP connections in the proxy are closed
  (``McpOps.CLOSE``), which abandons the call there too.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Final, Protocol, TypeVar

from pydantic import BaseModel

from corral.bus import Bus, BusError
from corral.contracts.api.errors import ApiError
from corral.contracts.api.events import HarnessEvent
from corral.contracts.mcp import (
    MCP_AUTHENTICATION_FAILED,
    CallMcpTool,
    CloseMcp,
    ListMcpTools,
    McpOps,
    McpTool,
    McpToolOutcome,
)
from corral.contracts.operation import Operation
from corral.harness import events
from corral.harness.decide import INTERRUPTED, Answer, ToolCall
from corral.harness.interrupts import Stop, unless_interrupted
from corral.harness.mcptools import McpEntry, servers
from corral.harness.runstate import SessionRun, agent_of, log_fields

logger = logging.getLogger(__name__)

_Req = TypeVar("_Req", bound=BaseModel)
_Rep = TypeVar("_Rep")

#: Sessions whose tool lists this process keeps (least recently used dropped first).
CACHED_SESSIONS: Final = 1024
#: How long a ``close`` after an interrupt is waited for.
CLOSE_TIMEOUT_S: Final = 3.0


class McpFailure(Exception):
    """The credential-proxy could not list or call: ``auth`` when the server refused the credentials."""

    def __init__(self, message: str, *, auth: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.auth = auth


class McpPort(Protocol):
    async def list_tools(self, request: ListMcpTools, *, timeout_s: float) -> list[McpTool]: ...

    async def call_tool(self, request: CallMcpTool, *, timeout_s: float) -> McpToolOutcome: ...

    async def close(self, session_id: str, *, timeout_s: float) -> None: ...


class BusMcp:
    """``McpPort`` over the bus; every failure is an ``McpFailure`` whose message says what happened."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def list_tools(self, request: ListMcpTools, *, timeout_s: float) -> list[McpTool]:
        return (await self._ask(McpOps.LIST, request, timeout_s)).tools

    async def call_tool(self, request: CallMcpTool, *, timeout_s: float) -> McpToolOutcome:
        return await self._ask(McpOps.CALL, request, timeout_s)

    async def close(self, session_id: str, *, timeout_s: float) -> None:
        await self._ask(McpOps.CLOSE, CloseMcp(session_id=session_id), timeout_s)

    async def _ask(self, op: Operation[_Req, _Rep], request: _Req, timeout_s: float) -> _Rep:
        try:
            return await self._bus.call(op, request, timeout=timeout_s)
        except TimeoutError:
            raise McpFailure(f"the MCP server did not answer within {timeout_s:g} s") from None
        except ApiError as exc:
            raise McpFailure(exc.message, auth=exc.error_code == MCP_AUTHENTICATION_FAILED) from None
        except BusError as exc:
            raise McpFailure(f"the credential-proxy, which reaches MCP servers, is not available ({exc})") from None


def mcp_tool_use(event_id: str, entry: McpEntry, tool_input: dict[str, Any]) -> HarnessEvent:
    """``agent.mcp_tool_use`` for a call of ``entry`` (its id is also the Messages ``tool_use.id``)."""
    return events.mcp_tool_use(
        event_id,
        entry.server,
        entry.tool,
        tool_input,
        evaluated_permission=entry.permission.evaluated,
        evaluation=entry.permission.evaluation,
    )


def mcp_unavailable(tool_use_id: str) -> HarnessEvent:
    return events.mcp_tool_error(tool_use_id, "MCP servers cannot be reached in this deployment.")


def mcp_error(server: str, failure: McpFailure) -> HarnessEvent:
    """``session.error`` naming the server that failed."""
    message = f"MCP server {server!r}: {failure.message}"
    if failure.auth:
        return events.mcp_server_error(server, "mcp_authentication_failed_error", message)
    return events.mcp_server_error(server, "mcp_connection_failed_error", message)


def answer_event(answer: Answer) -> HarnessEvent:
    """The error result closing a tool use without running it (``agent.mcp_tool_result`` for MCP)."""
    if answer.mcp:
        return events.mcp_tool_result(answer.tool_use_id, answer.content, is_error=True)
    return events.tool_result(answer.tool_use_id, answer.content, is_error=True)


class McpTools:
    def __init__(self, port: McpPort | None, *, list_timeout_s: float, call_timeout_s: float) -> None:
        self._port = port
        self._list_timeout_s = list_timeout_s
        self._call_timeout_s = call_timeout_s
        self._cache: OrderedDict[str, dict[tuple[object, str, str], list[McpTool]]] = OrderedDict()

    def _cached(self, session_id: str) -> dict[tuple[object, str, str], list[McpTool]]:
        entries = self._cache.setdefault(session_id, {})
        self._cache.move_to_end(session_id)
        while len(self._cache) > CACHED_SESSIONS:
            self._cache.popitem(last=False)
        return entries

    def forget(self, session_id: str) -> None:
        self._cache.pop(session_id, None)

    async def prepare(self, run: SessionRun) -> list[HarnessEvent]:
        """Put the agent's MCP tool lists on the run (``turn.mcp_tools``); the ``session.error`` events
        for servers that could not be listed, each reported once per run."""
        agent = agent_of(run.log.fold.session)
        urls = servers(agent)
        turn = run.turn
        if not urls:
            turn.mcp_tools = None
            return []
        version = agent.get("version")
        cached = self._cached(run.session_id)
        listing: dict[str, list[McpTool]] = {}
        errors: list[HarnessEvent] = []
        vault_ids = _vault_ids(run.log.fold.session)
        for name, url in urls.items():
            key = (version, name, url)
            if key in cached:
                listing[name] = cached[key]
                continue
            if turn.interrupted.is_set() or self._port is None:
                continue
            request = ListMcpTools(
                session_id=run.session_id,
                workspace_id=run.log.fold.workspace_id,
                server_name=name,
                url=url,
                vault_ids=vault_ids,
            )
            try:
                tools = await unless_interrupted(
                    self._port.list_tools(request, timeout_s=self._list_timeout_s), turn.interrupted
                )
            except McpFailure as failure:
                logger.warning(
                    "MCP server could not be listed: %s", failure.message, extra=log_fields(run.session_id, server=name)
                )
                if name not in turn.mcp_reported:
                    turn.mcp_reported.add(name)
                    errors.append(mcp_error(name, failure))
                continue
            if tools is Stop.INTERRUPTED:
                continue
            cached[key] = listing[name] = tools
            logger.info("MCP tools listed", extra=log_fields(run.session_id, server=name, tools=len(tools)))
        turn.mcp_tools = listing
        return errors

    async def call(self, run: SessionRun, call: ToolCall) -> list[HarnessEvent]:
        """The events answering one ``agent.mcp_tool_use``: its result, after a ``session.error`` when
        the server could not be reached."""
        agent = agent_of(run.log.fold.session)
        server = call.mcp_server or ""
        url = servers(agent).get(server)
        if url is None:
            return [
                events.mcp_tool_error(call.id, f"The MCP server {server!r} is no longer configured for this agent.")
            ]
        if self._port is None:
            return [mcp_unavailable(call.id)]
        request = CallMcpTool(
            session_id=run.session_id,
            workspace_id=run.log.fold.workspace_id,
            server_name=server,
            url=url,
            vault_ids=_vault_ids(run.log.fold.session),
            tool_use_id=call.id,
            name=call.name,
            arguments=call.input,
        )
        fields = log_fields(run.session_id, tool_use_id=call.id, server=server, tool=call.name)
        try:
            outcome = await unless_interrupted(
                self._port.call_tool(request, timeout_s=self._call_timeout_s), run.turn.interrupted
            )
        except McpFailure as failure:
            logger.warning("MCP tool call failed: %s", failure.message, extra=fields)
            return [
                mcp_error(server, failure),
                events.mcp_tool_error(call.id, f"The MCP server {server!r} could not run the tool: {failure.message}"),
            ]
        if outcome is Stop.INTERRUPTED:
            logger.info("MCP tool call interrupted", extra=fields)
            await self._abandon(run.session_id)
            return [events.mcp_tool_error(call.id, INTERRUPTED)]
        logger.info("MCP tool call answered", extra={**fields, "is_error": outcome.is_error})
        return [events.mcp_tool_result(call.id, outcome.content, is_error=outcome.is_error)]

    async def _abandon(self, session_id: str) -> None:
        """Close the session's MCP connections in the proxy, abandoning its running call (best effort)."""
        assert self._port is not None
        try:
            await self._port.close(session_id, timeout_s=CLOSE_TIMEOUT_S)
        except McpFailure as failure:
            logger.warning("could not close the session's MCP connections: %s", failure.message)


def _vault_ids(session: dict[str, Any]) -> list[str]:
    ids = session.get("vault_ids")
    return [str(i) for i in ids] if isinstance(ids, list) else []
