"""An agent's MCP tools as the model sees them, and the permission each call gets (pure).

An agent names its MCP servers in ``mcp_servers`` (``{type: "url", name, url}``) and configures each
one's tools with one ``mcp_toolset`` (``mcp_server_name``, ``default_config``, ``configs``), resolved
by the session-store. The tools themselves are whatever the server lists (``corral.harness.mcp``
fetches and caches the lists). Each enabled tool is offered to the model as a Messages-API tool named
``mcp__<server>__<tool>`` (``model_tool_name``): the server's name first, so two servers' tools of
the same name stay apart, and the model can tell which server a tool belongs to. The events name
the two apart, as the API does: ``agent.mcp_tool_use`` carries ``mcp_server_name`` and the tool's
own ``name``.

Permission: the tool's ``configs[].permission_policy``, else the toolset's
``default_config.permission_policy``, else ``always_ask`` (the API's default for MCP toolsets), read
like the agent toolset's (``tools.evaluate``). ``enabled`` the same way (default true); a disabled
tool is not offered.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from corral.contracts.mcp import McpTool
from corral.harness.permissions import Permission, evaluate

logger = logging.getLogger(__name__)

PREFIX: Final = "mcp__"
SEPARATOR: Final = "__"
#: Longest tool name the Messages API takes (``^[a-zA-Z0-9_-]{1,64}$``).
NAME_MAX: Final = 64
_ASK: Final = {"type": "always_ask"}
_NOT_NAME: Final = re.compile(r"[^A-Za-z0-9_-]")
ToolDefinition = dict[str, Any]

#: The tools each server listed, by server name.
Listing = Mapping[str, Sequence[McpTool]]


def model_tool_name(server: str, tool: str) -> str:
    """``mcp__<server>__<tool>``; a name with characters the API refuses, or too long, is made of its
    allowed characters, cut, and ended with a short hash of the pair (so it stays unique)."""
    plain = f"{PREFIX}{server}{SEPARATOR}{tool}"
    if len(plain) <= NAME_MAX and not _NOT_NAME.search(plain):
        return plain
    digest = hashlib.sha256(f"{server}\0{tool}".encode()).hexdigest()[:8]
    return f"{_NOT_NAME.sub('_', plain)[: NAME_MAX - 9]}_{digest}"


@dataclass(frozen=True)
class McpEntry:
    """One MCP tool the model may call."""

    server: str
    url: str
    tool: str
    permission: Permission


@dataclass(frozen=True)
class McpToolbox:
    definitions: tuple[ToolDefinition, ...] = ()
    entries: Mapping[str, McpEntry] = field(default_factory=dict)
    """By model-facing name."""


def servers(agent: Mapping[str, Any]) -> dict[str, str]:
    """The agent's MCP servers that an ``mcp_toolset`` uses: name -> URL."""
    urls: dict[str, str] = {}
    for server in agent.get("mcp_servers") or ():
        if isinstance(server, Mapping) and isinstance(server.get("name"), str) and isinstance(server.get("url"), str):
            urls.setdefault(server["name"], server["url"])
    used = set(toolsets(agent))
    return {name: url for name, url in urls.items() if name in used}


def toolsets(agent: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Each ``mcp_toolset`` by its server name (the first one, if an old snapshot has two)."""
    found: dict[str, Mapping[str, Any]] = {}
    tools = agent.get("tools")
    for tool in tools if isinstance(tools, Sequence) else ():
        if isinstance(tool, Mapping) and tool.get("type") == "mcp_toolset":
            name = tool.get("mcp_server_name")
            if isinstance(name, str):
                found.setdefault(name, tool)
    return found


def permission(toolset: Mapping[str, Any], tool: str) -> Permission | None:
    """The verdict for calls of ``tool``; ``None`` when the toolset disables it."""
    default = toolset.get("default_config")
    default = default if isinstance(default, Mapping) else {}
    config: Mapping[str, Any] = next(
        (c for c in toolset.get("configs") or () if isinstance(c, Mapping) and c.get("name") == tool), {}
    )
    enabled = config.get("enabled")
    if not isinstance(enabled, bool):
        enabled = default.get("enabled") is not False
    if not enabled:
        return None
    return evaluate(config.get("permission_policy") or default.get("permission_policy") or _ASK)


def mcp_toolbox(agent: Mapping[str, Any], listing: Listing | None) -> McpToolbox:
    """The MCP tools offered for ``agent``, from the servers' ``listing`` (servers missing from it,
    e.g. unreachable ones, offer nothing)."""
    if not listing:
        return McpToolbox()
    urls = servers(agent)
    sets = toolsets(agent)
    definitions: list[ToolDefinition] = []
    entries: dict[str, McpEntry] = {}
    for server, url in urls.items():
        for tool in listing.get(server, ()):
            verdict = permission(sets[server], tool.name)
            if verdict is None:
                continue
            name = model_tool_name(server, tool.name)
            if name in entries:
                logger.warning(
                    "two MCP tools have the same name for the model; the second is not offered",
                    extra={"fields": {"mcp_server_name": server, "tool": tool.name, "model_name": name}},
                )
                continue
            entries[name] = McpEntry(server=server, url=url, tool=tool.name, permission=verdict)
            definition: ToolDefinition = {"name": name, "input_schema": copy.deepcopy(tool.input_schema)}
            if tool.description:
                definition["description"] = tool.description
            definitions.append(definition)
    return McpToolbox(definitions=tuple(definitions), entries=entries)
