"""Noticing that the sandbox-manager serving an ``execute`` is gone, and sending the call again.

The manager serving an ``execute`` publishes an ``ExecuteHeartbeat`` every
``EXECUTE_HEARTBEAT_INTERVAL_S`` from the moment it receives it until it replies. Without them, a
manager killed mid-call would leave its caller waiting the whole reply timeout (up to 630 s): the
request went to that one process, and a restarted manager never answers it.

``dispatch`` runs one call and watches its heartbeats:

- no heartbeat for ``silence_s`` (counted from the send, so a request nobody received counts too),
  or a reply saying the manager is stopping (``MANAGER_STOPPING``): the manager is lost, and the
  same request (same ``(session_id, tool_use_id)`` key) is sent again at once, to whichever manager
  answers. The run-once rule makes this safe: a manager that had claimed the call left a record, so
  the next one answers from it (the outcome, or "interrupted: outcome unknown" when the runner died
  mid-way) instead of running the tool a second time; a call no manager ever claimed runs normally.
  A live manager still running it (it was only slow to beat) joins the running call.
- while re-dispatching, "no manager" (nothing serves the subject, or the engine is not back yet) is
  asked again every ``retry_every_s`` for up to ``wait_s`` after the loss; then, or after
  ``max_redispatches`` losses, the call ends in a ``SandboxError`` saying its outcome is unknown.
- any other reply or error is the call's, as without a watch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from corral.contracts.sandbox import MANAGER_STOPPING

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: ``SandboxError.code`` of "no manager could take the call" (nothing serves it, or no engine).
UNAVAILABLE = "sandbox_unavailable"
#: ``SandboxError.code`` of a call whose manager was lost and that no manager could answer again.
OUTCOME_UNKNOWN = "sandbox_outcome_unknown"


@dataclass(frozen=True)
class RedispatchPolicy:
    #: No heartbeat for this long: the manager serving the call is gone (several heartbeat intervals).
    silence_s: float = 5.0
    #: After a loss, how long "no manager" is asked again before the call ends as "outcome unknown".
    wait_s: float = 60.0
    #: Losses of one call before it ends as "outcome unknown" (a manager that keeps crashing on it).
    max_redispatches: int = 3
    #: How often "no manager" is asked again while re-dispatching.
    retry_every_s: float = 0.5


class Heartbeats:
    """When the manager serving a call last said it was still at it; ``beat`` is fed by the subscription."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.instance: str | None = None

    def beat(self, instance: str | None = None) -> None:
        self.last = time.monotonic()
        if instance is not None:
            self.instance = instance

    def restart(self) -> None:
        """A request is being sent: silence counts from now."""
        self.last = time.monotonic()


class ManagerLost(Exception):
    """The manager serving the call stopped beating, or said it is stopping."""


async def dispatch(
    send: Callable[[], Awaitable[_T]],
    heartbeats: Heartbeats,
    policy: RedispatchPolicy,
    *,
    code_of: Callable[[Exception], str | None],
    outcome_unknown: Callable[[str], Exception],
    describe: dict[str, object] | None = None,
) -> _T:
    """``send()``'s result, re-sending while the manager serving it is lost (see the module docstring).

    ``code_of`` says what an exception of ``send`` means (``MANAGER_STOPPING``, ``UNAVAILABLE`` or
    anything else, re-raised); ``outcome_unknown(why)`` is the exception raised when giving up.
    """
    fields = dict(describe or {})
    losses = 0
    lost_at = 0.0
    while True:
        heartbeats.restart()
        try:
            return await _until_silent(send(), heartbeats, policy.silence_s)
        except ManagerLost:
            why = f"sent no heartbeat for {policy.silence_s:g} s"
        except Exception as exc:
            code = code_of(exc)
            if code == MANAGER_STOPPING:
                why = "is stopping"
            elif code == UNAVAILABLE and losses:
                if time.monotonic() - lost_at >= policy.wait_s:
                    raise outcome_unknown(
                        f"The sandbox-manager running this tool call stopped and none was back within "
                        f"{policy.wait_s:g} s, so the call's outcome is unknown: it may have run, in part or "
                        "in full. Check the sandbox's state before calling the tool again."
                    ) from exc
                await asyncio.sleep(policy.retry_every_s)
                continue
            else:
                raise
        losses += 1
        logger.warning(
            "the sandbox-manager serving a tool call %s; sending the call again",
            why,
            extra={"fields": {**fields, "instance": heartbeats.instance, "losses": losses}},
        )
        if losses > policy.max_redispatches:
            raise outcome_unknown(
                f"The sandbox-manager running this tool call stopped {losses} times, so the call's outcome is "
                "unknown: it may have run, in part or in full. Check the sandbox's state before calling the tool "
                "again."
            )
        lost_at = time.monotonic()


async def _until_silent(call: Awaitable[_T], heartbeats: Heartbeats, silence_s: float) -> _T:
    """``call``'s result, or ``ManagerLost`` (``call`` cancelled) once ``silence_s`` pass without a heartbeat."""
    task = asyncio.ensure_future(call)
    try:
        while True:
            remaining = heartbeats.last + silence_s - time.monotonic()
            if remaining <= 0:
                raise ManagerLost()
            done, _ = await asyncio.wait({task}, timeout=remaining)
            if done:
                return task.result()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
