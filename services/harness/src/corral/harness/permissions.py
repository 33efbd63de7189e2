"""A permission policy's verdict on one tool call (pure), shared by the agent toolset and MCP toolsets.

A policy evaluates to the ``agent.tool_use`` / ``agent.mcp_tool_use`` fields ``evaluated_permission``
and ``evaluation``:

    always_allow  → allow, {type: always_allow}
    always_ask    → ask,   {type: always_ask}
    auto          → ask,   {type: auto, evaluated_permission: {type: ask, reason_code: indeterminate}}

``auto`` means "the server judges each call"; Corral has no judge, so every ``auto`` call is
indeterminate and asks the user, the safe reading of the policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

Evaluated = Literal["allow", "ask", "deny"]


@dataclass(frozen=True)
class Permission:
    """A policy's verdict on one call: the ``agent.tool_use`` ``evaluated_permission`` and ``evaluation``."""

    evaluated: Evaluated
    evaluation: dict[str, Any]


ALWAYS_ALLOW: Final = Permission("allow", {"type": "always_allow"})
ALWAYS_ASK: Final = Permission("ask", {"type": "always_ask"})
AUTO: Final = Permission(
    "ask", {"type": "auto", "evaluated_permission": {"type": "ask", "reason_code": "indeterminate"}}
)


def evaluate(policy: object) -> Permission:
    """The verdict of a ``permission_policy`` object; anything unreadable asks (never silently allows)."""
    kind = policy.get("type") if isinstance(policy, Mapping) else None
    if kind == "always_allow":
        return ALWAYS_ALLOW
    if kind == "auto":
        return AUTO
    return ALWAYS_ASK
