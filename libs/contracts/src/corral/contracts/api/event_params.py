"""What a client may send as session events (``POST /v1/sessions/{id}/events``, and a new session's
``initial_events``): one model per event type, with a ``type`` literal; ``EventParams`` is their
discriminated union. What the session log holds is in ``corral.contracts.api.events``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from corral.contracts.api.base import Request
from corral.contracts.api.content import TextBlock, ToolResultContent, UserContent


class UserMessageParams(Request):
    type: Literal["user.message"]
    content: Annotated[list[UserContent], Field(min_length=1)]


class UserInterruptParams(Request):
    type: Literal["user.interrupt"]
    session_thread_id: str | None = None


class UserToolConfirmationParams(Request):
    type: Literal["user.tool_confirmation"]
    tool_use_id: Annotated[str, StringConstraints(min_length=1)]
    result: Literal["allow", "deny"]
    deny_message: str | None = None


class UserCustomToolResultParams(Request):
    type: Literal["user.custom_tool_result"]
    custom_tool_use_id: Annotated[str, StringConstraints(min_length=1)]
    content: list[ToolResultContent] | None = None
    is_error: bool | None = None


class UserToolResultParams(Request):
    type: Literal["user.tool_result"]
    tool_use_id: Annotated[str, StringConstraints(min_length=1)]
    content: list[ToolResultContent] | None = None
    is_error: bool | None = None


class TextRubric(Request):
    type: Literal["text"]
    content: Annotated[str, StringConstraints(min_length=1)]


class FileRubric(Request):
    type: Literal["file"]
    file_id: Annotated[str, StringConstraints(min_length=1)]


class UserDefineOutcomeParams(Request):
    """Accepted in shape so the session-store can answer that outcomes are not supported yet."""

    type: Literal["user.define_outcome"]
    description: Annotated[str, StringConstraints(min_length=1)]
    rubric: Annotated[TextRubric | FileRubric, Field(discriminator="type")]
    max_iterations: Annotated[int, Field(ge=1, le=20)] | None = None


class SystemMessageParams(Request):
    """Accepted in shape so the session-store can answer that system messages are not supported yet."""

    type: Literal["system.message"]
    content: Annotated[list[TextBlock], Field(min_length=1)]


EventParams = Annotated[
    UserMessageParams
    | UserInterruptParams
    | UserToolConfirmationParams
    | UserCustomToolResultParams
    | UserToolResultParams
    | UserDefineOutcomeParams
    | SystemMessageParams,
    Field(discriminator="type"),
]
InitialEventParams = Annotated[UserMessageParams | UserDefineOutcomeParams, Field(discriminator="type")]
"""What ``sessions.create`` takes as ``initial_events``."""


class SendEventsParams(Request):
    events: Annotated[list[EventParams], Field(min_length=1, max_length=50)]
