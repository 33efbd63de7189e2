"""How an MCP connection or call failed, in words a tenant can act on: ``McpConnectionFailed``
(unreachable, too slow, not MCP) and ``McpAuthenticationFailed`` (HTTP 401 or 403 that stands)."""

from __future__ import annotations

from corral.credential_proxy.mcp_destinations import DestinationRefused, ServerUrl


class McpConnectionFailed(Exception):
    """The server could not be reached, did not answer in time or did not speak MCP."""


class McpAuthenticationFailed(Exception):
    """The server refused the request (HTTP 401 or 403)."""


def auth_message(server: ServerUrl, status: int | None, problem: str | None = None) -> str:
    if problem is not None:
        return f"the MCP server at {server.authority} refused the request (HTTP {status}): {problem}"
    return (
        f"the MCP server at {server.authority} refused the request (HTTP {status}): it needs credentials; "
        "add a credential for this server URL to a vault the session uses (a static_bearer or mcp_oauth "
        "credential whose mcp_server_url covers it), or update the one it has"
    )


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def reason(exc: BaseException) -> str:
    return "; ".join(str(leaf) or type(leaf).__name__ for leaf in leaves(exc))


def explain(exc: BaseException, server: ServerUrl, status: int | None, problem: str | None) -> Exception:
    refused = next((leaf for leaf in leaves(exc) if isinstance(leaf, DestinationRefused)), None)
    if refused is not None:
        return refused
    if status in (401, 403):
        return McpAuthenticationFailed(auth_message(server, status, problem))
    if status is not None:
        return McpConnectionFailed(
            f"the MCP server at {server.authority} answered HTTP {status} to the MCP handshake; check the URL"
        )
    return McpConnectionFailed(f"cannot connect to the MCP server at {server.authority}: {reason(exc)}")
