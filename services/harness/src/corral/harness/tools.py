"""The tools a session's model is offered, and the permission each call gets (pure).

From the agent snapshot's ``tools`` (the resolved forms the session-store keeps):

- ``agent_toolset_20260401``: every *enabled* built-in tool becomes a Messages-API tool definition
  (a description and an ``input_schema`` in the API's input shapes); its permission policy is the
  tool's ``configs[].permission_policy``, else ``default_config.permission_policy``, else
  ``always_allow`` (the API's default for the agent toolset).
- ``custom``: passed to the model as given (``name``, ``description``, ``input_schema``). Custom
  tools are never governed by a permission policy: a call becomes ``agent.custom_tool_use`` and the
  client answers it.
- ``mcp_toolset``: the tools its server listed (fetched by ``corral.harness.mcp``), named and
  judged by ``mcptools`` (default policy ``always_ask``).

Policies are read by ``permissions.evaluate``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from corral.contracts.sandbox import BUILTIN_TOOLS, TOOLSET_TYPE
from corral.harness.mcptools import Listing, McpEntry, mcp_toolbox
from corral.harness.permissions import ALWAYS_ALLOW as ALWAYS_ALLOW
from corral.harness.permissions import ALWAYS_ASK as ALWAYS_ASK
from corral.harness.permissions import AUTO as AUTO
from corral.harness.permissions import Evaluated as Evaluated
from corral.harness.permissions import Permission, evaluate

logger = logging.getLogger(__name__)

ToolKind = Literal["builtin", "custom", "mcp", "unknown"]
ToolDefinition = dict[str, Any]

_WORKSPACE_NOTE = "Relative paths are relative to the workspace, /workspace."

#: The built-in tools as the model sees them: description and input schema (the API's input shapes).
BUILTIN_DEFINITIONS: Final[Mapping[str, ToolDefinition]] = {
    "bash": {
        "description": (
            "Run a shell command in this session's sandbox, a Linux container. The shell is persistent: "
            "the working directory and environment variables carry over from one call to the next. "
            "Returns the command's combined stdout and stderr and its exit status. Set restart to true "
            "to start a fresh shell (with or without a command). timeout_ms bounds how long the command "
            "may run (default 2 minutes)."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The bash command to run."},
                "restart": {"type": "boolean", "description": "Restart the shell before running the command."},
                "timeout_ms": {"type": "integer", "minimum": 1, "description": "Timeout in milliseconds."},
            },
        },
    },
    "edit": {
        "description": (
            "Edit a text file by replacing an exact string. old_string must match the file's content "
            "exactly (whitespace and indentation included) and be unique in the file, unless "
            "replace_all is true, which replaces every occurrence. " + _WORKSPACE_NOTE
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "file_path": {"type": "string", "description": "The file to edit."},
                "old_string": {"type": "string", "description": "The exact text to replace."},
                "new_string": {"type": "string", "description": "The text to put in its place."},
                "replace_all": {"type": "boolean", "description": "Replace every occurrence (default false)."},
            },
            "required": ["file_path", "old_string", "new_string"],
        },
    },
    "read": {
        "description": (
            "Read a text file, with line numbers. view_range [start_line, end_line] (1-indexed; an "
            "end_line of -1 reads to the end) reads part of a long file. Binary files are refused. " + _WORKSPACE_NOTE
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "file_path": {"type": "string", "description": "The file to read."},
                "view_range": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "minItems": 2,
                    "maxItems": 2,
                    "description": "[start_line, end_line], 1-indexed.",
                },
            },
            "required": ["file_path"],
        },
    },
    "write": {
        "description": (
            "Write a file, creating it (and its parent directories) or replacing its whole content. " + _WORKSPACE_NOTE
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "file_path": {"type": "string", "description": "The file to write."},
                "content": {"type": "string", "description": "The complete new content of the file."},
            },
            "required": ["file_path", "content"],
        },
    },
    "glob": {
        "description": (
            "Find files by name with a glob pattern such as **/*.py (** matches any number of "
            "directories). Newest files first. path is the directory to search (default: the workspace)."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "pattern": {"type": "string", "description": "The glob pattern."},
                "path": {"type": "string", "description": "The directory to search in."},
            },
            "required": ["pattern"],
        },
    },
    "grep": {
        "description": (
            "Search file contents with a regular expression (Python syntax). Prints path:line:text for "
            "every matching line. path is a file or directory to search (default: the workspace)."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "pattern": {"type": "string", "description": "The regular expression."},
                "path": {"type": "string", "description": "The file or directory to search in."},
            },
            "required": ["pattern"],
        },
    },
    "web_fetch": {
        "description": (
            "Fetch a web page or document by URL (http or https) and return its content: HTML as Markdown "
            "text with absolute links, other text as is, PDFs as documents. Only public hosts are reached."
        ),
        "input_schema": {
            "type": "object",
            "properties": {"url": {"type": "string", "description": "The URL to fetch."}},
            "required": ["url"],
        },
    },
    "web_search": {
        "description": "Search the web and return the top results, each with its URL, title and a snippet.",
        "input_schema": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "The search query."}},
            "required": ["query"],
        },
    },
}

_ALLOW_POLICY: Final = {"type": "always_allow"}


@dataclass(frozen=True)
class Toolbox:
    """What the model is offered (``definitions``, in order) and how each name is handled."""

    definitions: tuple[ToolDefinition, ...] = ()
    builtin: Mapping[str, Permission] = field(default_factory=dict)
    """The enabled built-in tools and their verdicts."""
    custom: frozenset[str] = frozenset()
    mcp: Mapping[str, McpEntry] = field(default_factory=dict)
    """The MCP tools offered, by the name the model sees (``mcptools.model_tool_name``)."""

    def kind(self, name: str) -> ToolKind:
        if name in self.builtin:
            return "builtin"
        if name in self.custom:
            return "custom"
        if name in self.mcp:
            return "mcp"
        return "unknown"

    @property
    def needs_sandbox(self) -> bool:
        """Whether any enabled built-in tool runs in the sandbox (so provisioning early pays off); the
        web tools run in the credential-proxy."""
        return any(name not in ("web_fetch", "web_search") for name in self.builtin)


def _builtin(toolset: Mapping[str, Any]) -> dict[str, Permission]:
    default = toolset.get("default_config")
    default = default if isinstance(default, Mapping) else {}
    default_enabled = default.get("enabled") is not False
    default_policy = default.get("permission_policy") or _ALLOW_POLICY
    configs: dict[str, Mapping[str, Any]] = {}
    for config in toolset.get("configs") or ():
        if isinstance(config, Mapping) and isinstance(config.get("name"), str):
            configs[config["name"]] = config
    enabled: dict[str, Permission] = {}
    for name in BUILTIN_TOOLS:
        config = configs.get(name, {})
        is_enabled = config.get("enabled") if isinstance(config.get("enabled"), bool) else default_enabled
        if is_enabled:
            enabled[name] = evaluate(config.get("permission_policy") or default_policy)
    return enabled


def _custom_definition(tool: Mapping[str, Any]) -> ToolDefinition | None:
    name, schema = tool.get("name"), tool.get("input_schema")
    if not isinstance(name, str) or not name or not isinstance(schema, Mapping):
        return None
    definition: ToolDefinition = {"name": name, "input_schema": copy.deepcopy(dict(schema))}
    if isinstance(tool.get("description"), str):
        definition["description"] = tool["description"]
    return definition


def toolbox(agent: Mapping[str, Any], mcp: Listing | None = None) -> Toolbox:
    """The toolbox for an agent snapshot; unreadable tool entries are left out. ``mcp``: the tools
    its MCP servers listed (``corral.harness.mcp``), offered after the others."""
    tools = agent.get("tools")
    definitions: list[ToolDefinition] = []
    builtin: dict[str, Permission] = {}
    custom: set[str] = set()
    for tool in tools if isinstance(tools, Sequence) else ():
        if not isinstance(tool, Mapping):
            continue
        kind = tool.get("type")
        if kind == TOOLSET_TYPE:
            for name, permission in _builtin(tool).items():
                if name not in builtin:
                    builtin[name] = permission
                    definitions.append({"name": name, **copy.deepcopy(BUILTIN_DEFINITIONS[name])})
        elif kind == "custom":
            definition = _custom_definition(tool)
            if definition is not None and definition["name"] not in custom and definition["name"] not in builtin:
                custom.add(definition["name"])
                definitions.append(definition)
    offered = mcp_toolbox(agent, mcp)
    entries = {name: entry for name, entry in offered.entries.items() if name not in builtin and name not in custom}
    definitions += [d for d in offered.definitions if d["name"] in entries]
    return Toolbox(definitions=tuple(definitions), builtin=builtin, custom=frozenset(custom), mcp=entries)
