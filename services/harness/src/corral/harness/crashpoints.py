"""Deterministic crash-points for fault tests (reliability plan: "kill every step boundary").

With ``CORRAL_HARNESS_CRASHPOINT=<name>`` the process exits with status
137, as if SIGKILLed, the first time the turn reaches that boundary. Unset, ``hit`` does nothing.
"""

from __future__ import annotations

import logging
import os
from typing import Final, Protocol

logger = logging.getLogger(__name__)

AFTER_MODEL_REQUEST_START: Final = "after_model_request_start"
"""``span.model_request_start`` is in the log; the model has not been called."""

MID_STREAM: Final = "mid_stream"
"""The first text delta was published; nothing of the reply is in the log."""

BEFORE_TURN_END: Final = "before_turn_end"
"""The reply is complete; the single end-of-turn append has not been sent."""

AFTER_TURN_END: Final = "after_turn_end"
"""The end-of-turn append was acknowledged; the lease is still held and the wake not acked."""

AFTER_TOOL_EXECUTED: Final = "after_tool_executed"
"""The sandbox-manager answered a tool call; its ``agent.tool_result`` is not in the log yet."""

NAMES: Final = frozenset({AFTER_MODEL_REQUEST_START, MID_STREAM, BEFORE_TURN_END, AFTER_TURN_END, AFTER_TOOL_EXECUTED})


class Crashpoint(Protocol):
    def __call__(self, name: str) -> None: ...


def no_crash(name: str) -> None:
    """The production default: never crash."""


class ExitAt:
    """Exit the process (status 137, no clean-up) at the boundary called ``name``."""

    def __init__(self, name: str) -> None:
        if name not in NAMES:
            raise ValueError(f"unknown crashpoint {name!r}; expected one of {sorted(NAMES)}")
        self.name = name

    def __call__(self, name: str) -> None:
        if name == self.name:
            logger.warning("crashpoint reached, exiting", extra={"fields": {"crashpoint": name}})
            logging.shutdown()
            os._exit(137)
