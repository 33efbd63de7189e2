"""Dispatch of a built-in tool call: answered here, or run by the exec agent with which timeout.

The input shapes are the API's (``agent_toolset_20260401``): the exec agent checks each field and
answers a malformed input with an error result the model can act on. Here: unknown names, the web
tools (server-side tools in the API, with no backend here: an honest error, never a made-up result)
and the timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from corral.contracts.sandbox import BUILTIN_TOOLS, Execute
from corral.sandbox_manager.settings import SandboxSettings

SANDBOX_TOOLS: Final = ("bash", "read", "write", "edit", "glob", "grep")
WEB_TOOLS: Final = ("web_fetch", "web_search")


@dataclass(frozen=True)
class LocalAnswer:
    text: str
    is_error: bool = True


@dataclass(frozen=True)
class SandboxCall:
    tool: str
    args: dict[str, Any]
    timeout_ms: int


def plan(request: Execute, settings: SandboxSettings) -> LocalAnswer | SandboxCall:
    name = request.name
    if name in WEB_TOOLS:
        return LocalAnswer(
            f"{name} is not available in this deployment: Corral has no web fetch or search backend here, "
            "so nothing was fetched. If this environment allows network access, bash can reach the hosts it "
            "allows (for example with python3's urllib); otherwise work with the files in the sandbox, or ask "
            "the user for the content."
        )
    if name not in SANDBOX_TOOLS:
        return LocalAnswer(f"unknown tool {name!r}; the built-in toolset has {', '.join(BUILTIN_TOOLS)}")
    timeout_ms = request.timeout_ms
    if name == "bash" and "timeout_ms" in request.input and request.input["timeout_ms"] not in (None, 0):
        value = request.input["timeout_ms"]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return LocalAnswer("timeout_ms must be a positive whole number of milliseconds")
        timeout_ms = value
    if not timeout_ms or timeout_ms <= 0:
        timeout_ms = settings.tool_timeout_ms
    timeout_ms = min(timeout_ms, settings.tool_timeout_max_ms)
    args = {k: v for k, v in request.input.items() if not (name == "bash" and k == "timeout_ms")}
    return SandboxCall(tool=name, args=args, timeout_ms=timeout_ms)
