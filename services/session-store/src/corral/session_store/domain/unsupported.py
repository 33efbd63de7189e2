"""Parts of the API that this Corral does not build yet, refused with a 400 that says so. Pure.

A request that uses one gets ``invalid_request_error`` with ``error_code`` ``feature_not_supported``
and a message naming the field, rather than being stored and then silently ignored (an agent
whose skill that is never loaded, an environment whose tools all
fail). Sending the field empty (``[]`` or ``null``) is the same as leaving it out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from corral.contracts.api.errors import ApiError, invalid

FEATURE_NOT_SUPPORTED: Final = "feature_not_supported"

_AGENT_FIELDS: Final = {
    "skills": "skills are not supported yet: Corral cannot load skills into a session",
    "multiagent": "multiagent is not supported yet: Corral runs one agent thread per session",
}
_OMIT: Final = "omit it (or send it empty) for now"

SELF_HOSTED: Final = (
    "self_hosted environments are not supported yet: Corral has no work queue for your own workers, "
    'so their tools could never run; use {"type": "cloud"} (Corral\'s own sandboxes)'
)


def not_supported(message: str) -> ApiError:
    return invalid(message, error_code=FEATURE_NOT_SUPPORTED)


def reject_unbuilt_agent_fields(params: Mapping[str, Any], *, prefix: str = "") -> None:
    """Refuse ``skills`` and ``multiagent`` in agent params
    (or the agent part of a session request, ``prefix`` naming where it sits: ``"agent."``).

    Raises:
        ApiError: 400 ``feature_not_supported`` naming the first such field.
    """
    for name, why in _AGENT_FIELDS.items():
        if params.get(name):
            raise not_supported(f"{prefix}{name}: {why}; {_OMIT}")


def reject_self_hosted(config: Mapping[str, Any] | None, *, field: str = "config") -> None:
    """Raises: ApiError: 400 ``feature_not_supported`` for a ``self_hosted`` environment config."""
    if config is not None and config.get("type") == "self_hosted":
        raise not_supported(f"{field}.type: {SELF_HOSTED}")


_EVENT_TYPES: Final = {
    "user.define_outcome": "outcomes are not supported yet: Corral has no grader to evaluate them; "
    "describe what you want in a user.message",
    "system.message": "system messages are not supported yet; send the text as a user.message, "
    "or put standing instructions in the agent's system prompt",
    "user.tool_result": "user.tool_result is only for self_hosted environments, which are not supported "
    "yet; answer built-in tools with user.tool_confirmation and custom tools with user.custom_tool_result",
}
UNBUILT_EVENT_TYPES: Final = frozenset(_EVENT_TYPES)


def reject_unbuilt_event(kind: object, *, where: str) -> None:
    """Raises: ApiError: 400 ``feature_not_supported`` for an event type the API defines and Corral
    does not act on yet (``where`` names the event: ``events.0``)."""
    if isinstance(kind, str) and kind in _EVENT_TYPES:
        raise not_supported(f"{where}.type: {_EVENT_TYPES[kind]}")
