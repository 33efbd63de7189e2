"""MCP operations: the harness asks the credential-proxy, the only MCP client, over ``corral.rpc.mcp.<op>``.

An agent's ``mcp_servers`` (type ``url``) are chosen by tenants, so the harness never connects to
them itself: it asks the credential-proxy to ``list`` a server's tools and to ``call`` one, naming
the session (whose connection the proxy may reuse, and whose vault credentials are matched to the
server by URL), its ``workspace_id`` and ``vault_ids`` (the vaults are read in that workspace only),
and the server (``server_name`` for messages, ``url`` to connect to). The proxy
connects only to addresses its destination rules allow (the same as sandbox egress: no loopback,
private, link-local, documentation or own addresses, checked on the address connected to) unless
its operator admits ``host:port`` with ``CORRAL_CREDENTIAL_PROXY_ALLOW_DESTINATIONS``.

Every reply is a ``corral.contracts.rpc.RpcReply``. A failure to reach or speak to the server is an
error reply with ``details.error_code``:

- ``mcp_connection_failed``: the server is down, did not answer in time, answered with something
  that is not MCP, or its URL is malformed;
- ``mcp_destination_refused``: the destination rules refuse the URL's host (the message names the
  address, why, and the setting an operator would change);
- ``mcp_authentication_failed``: the server refused the request (HTTP 401 or 403).

A tool that runs and fails is not an error reply: it is a ``McpToolOutcome`` with ``is_error``.
``close`` drops the session's pooled connections (idempotent).
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypeVar

from pydantic import BaseModel, Field

from corral.contracts.egress import SESSION_ID_PATTERN
from corral.contracts.operation import Operation, operation
from corral.contracts.rpc import Message
from corral.contracts.subjects import MCP_QUEUE as MCP_QUEUE
from corral.contracts.subjects import MCP_RPC_WILDCARD as MCP_RPC_WILDCARD
from corral.contracts.subjects import mcp_rpc as mcp_rpc

McpErrorCode = Literal["mcp_connection_failed", "mcp_destination_refused", "mcp_authentication_failed"]
MCP_CONNECTION_FAILED: Final = "mcp_connection_failed"
MCP_DESTINATION_REFUSED: Final = "mcp_destination_refused"
MCP_AUTHENTICATION_FAILED: Final = "mcp_authentication_failed"

#: Longest server URL accepted.
MCP_URL_MAX_LENGTH: Final = 2048


class McpOp:
    """Operation names; each is the last token of its request subject."""

    LIST = "list"
    CALL = "call"
    CLOSE = "close"


class McpServer(Message):
    """Which server, on whose behalf."""

    session_id: str = Field(pattern=SESSION_ID_PATTERN, description="the session the call is made for")
    workspace_id: str = Field(
        min_length=1,
        max_length=80,
        description="the session's workspace: its vaults are read in this workspace only, so another "
        "workspace's vault is never used",
    )
    server_name: str = Field(min_length=1, max_length=255, description="the agent's name for the server")
    url: str = Field(min_length=1, max_length=MCP_URL_MAX_LENGTH, description="the server's endpoint (http or https)")
    vault_ids: list[str] = Field(
        default_factory=list,
        description="the session's vaults, whose static_bearer and mcp_oauth credentials are matched to the "
        "server by URL",
    )


class ListMcpTools(McpServer):
    """The server's tools (every page)."""


class McpTool(Message):
    name: str
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class McpToolList(Message):
    tools: list[McpTool]


class CallMcpTool(McpServer):
    """Call one tool; ``tool_use_id`` (the ``agent.mcp_tool_use`` event id) names the call in logs."""

    tool_use_id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=255, description="the tool's name on the server")
    arguments: dict[str, Any] = Field(default_factory=dict)


class McpToolOutcome(Message):
    """The tool's result as ``agent.mcp_tool_result`` content blocks (text, image, document)."""

    content: list[dict[str, Any]]
    is_error: bool


class CloseMcp(Message):
    session_id: str = Field(pattern=SESSION_ID_PATTERN)


class McpClosed(Message):
    closed: int = Field(description="how many connections were closed")


_Req = TypeVar("_Req", bound=BaseModel)
_Rep = TypeVar("_Rep")


def _mcp(name: str, request: type[_Req], reply: type[_Rep]) -> Operation[_Req, _Rep]:
    return operation(name, mcp_rpc(name), request, reply, queue=MCP_QUEUE, service="credential-proxy")


class McpOps:
    """Every ``corral.rpc.mcp.<op>`` operation (queue group ``credential-proxy``)."""

    LIST: Final = _mcp(McpOp.LIST, ListMcpTools, McpToolList)
    CALL: Final = _mcp(McpOp.CALL, CallMcpTool, McpToolOutcome)
    CLOSE: Final = _mcp(McpOp.CLOSE, CloseMcp, McpClosed)
