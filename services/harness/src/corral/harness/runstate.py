"""What the steps of one session run share: the session, its lease, its log, the run's state.

``SessionRun`` is the typed context every step takes (``turn``, ``modelturn``, ``toolrun``); its
``append`` is the only way a step writes to the log, and it never writes once the lease is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from corral.contracts import rpc
from corral.contracts.api.environments import Environment
from corral.contracts.api.events import HarnessEvent
from corral.contracts.mcp import McpTool
from corral.contracts.repositories import RepositoryMount
from corral.harness import metrics
from corral.harness.lease import HeldLease
from corral.harness.sessionlog import SessionLog
from corral.harness.store import Store

logger = logging.getLogger(__name__)


class LeaseLost(Exception):
    """The lease is not ours any more: the run stops before its next append."""


def log_fields(session_id: str, **more: Any) -> dict[str, Any]:
    """A log record's ``extra``: the session's id and ``more``."""
    return {"fields": {"session_id": session_id, **more}}


def agent_of(session: dict[str, Any]) -> dict[str, Any]:
    """The session's agent snapshot (empty when the log names none)."""
    snapshot = session.get("agent")
    return snapshot if isinstance(snapshot, dict) else {}


def vault_ids_of(session: dict[str, Any]) -> list[str]:
    """The session's ``vault_ids`` (ids only: the credentials are read by the credential-proxy)."""
    ids = session.get("vault_ids")
    return [str(i) for i in ids] if isinstance(ids, list) else []


def repositories_of(session: dict[str, Any]) -> list[RepositoryMount]:
    """The session's ``github_repository`` resources, as the sandbox-manager clones them (metadata only:
    the session log never holds a token)."""
    mounts: list[RepositoryMount] = []
    for resource in session.get("resources") or []:
        if not isinstance(resource, dict) or resource.get("type") != "github_repository":
            continue
        try:
            mounts.append(
                RepositoryMount(
                    resource_id=resource["id"],
                    url=resource["url"],
                    mount_path=resource["mount_path"],
                    checkout=resource.get("checkout"),
                )
            )
        except (KeyError, ValidationError):
            continue  # written by another version: not cloned, the session goes on
    return mounts


@dataclass
class TurnState:
    """One run's state. Shared with the interrupt watcher: the log position the current step decided
    on. ``owned``: the session is ``running`` because this run set it so (between steps of a turn)."""

    horizon: int | None = None
    interrupted: asyncio.Event = field(default_factory=asyncio.Event)
    latest_interrupt: int = 0
    """Stream sequence of the newest ``user.interrupt`` the watcher has seen."""
    owned: bool = False
    provisioning: asyncio.Task[None] | None = None
    context_limit: int | None = None
    """The largest prompt the model said it takes ("prompt is too long: N tokens > M maximum")."""
    environment: Environment | None = None
    environment_read: bool = False
    handoff_seen: bool = False
    mcp_tools: Mapping[str, Sequence[McpTool]] | None = None
    """The tools each of the agent's MCP servers listed, for this step (``corral.harness.mcp``)."""
    mcp_reported: set[str] = field(default_factory=set)
    """MCP servers whose failure to list this run has reported already."""
    started: float = field(default_factory=time.monotonic)
    """When the run began (its wake-up taken, the lease held): ``corral_harness_turn_overhead_seconds``."""
    overhead_observed: bool = False
    contested: bool = False
    """The current step took the session over from another holder (it was ``running`` or
    ``rescheduling`` without this run): that holder, its lease run out, may still be appending."""

    def begin(self, horizon: int) -> None:
        """A step decided on the log up to ``horizon``: an interrupt logged after it stops the step
        (even one the watcher saw before the step began)."""
        self.horizon = horizon
        self.notice(self.latest_interrupt)

    def notice(self, interrupt_seq: int) -> bool:
        """Record the newest interrupt seen; returns whether it stops the current step."""
        self.latest_interrupt = max(self.latest_interrupt, interrupt_seq)
        if self.horizon is not None and self.latest_interrupt > self.horizon:
            self.interrupted.set()
            return True
        self.interrupted.clear()
        return False

    def appended(self, batch: Sequence[HarnessEvent]) -> None:
        for event in batch:
            kind = event.type
            if kind == "session.status_running":
                self.owned = True
            elif kind in ("session.status_idle", "session.status_rescheduled"):
                self.owned = False


@dataclass
class SessionRun:
    """The session a run works on while it holds ``lease``: its followed ``log`` and the run's ``turn``."""

    session_id: str
    lease: HeldLease
    log: SessionLog
    turn: TurnState
    store: Store

    async def append(self, batch: Sequence[HarnessEvent], *, decided: bool = False) -> rpc.Appended:
        """Append ``batch`` in one call, with the lease's proof. ``decided``: the step's first
        append, made before it acts (model request, tool calls); when the step took the session
        over (``TurnState.contested``) it is fenced on the position its decision saw
        (``TurnState.horizon``, not the fold's position now, which may have taken in records the
        decision did not see), so a step decided without the last records of a holder whose lease
        ran out is decided again instead of acting. (Not every step: a client's burst of messages
        would keep refusing an idle session's first step; its input is the next step's anyway.)

        Raises:
            LeaseLost: the lease was lost (nothing is sent).
            LogMoved: ``decided`` and the log moved past the decision's position (nothing stored).
        """
        if self.lease.lost.is_set():
            raise LeaseLost
        fence = self.turn.horizon if decided and self.turn.contested else None
        appended = await self.store.append(self.session_id, batch, lease=self.lease.proof(), expected_last_seq=fence)
        self.turn.appended(batch)
        first = not self.turn.overhead_observed
        if metrics.appended(batch, run_started=self.turn.started, first_request=first):
            self.turn.overhead_observed = True
        logger.debug(
            "appended",
            extra=log_fields(self.session_id, types=[e.type for e in batch], last_seq=appended.last_seq),
        )
        return appended

    def fields(self, **more: Any) -> dict[str, Any]:
        return log_fields(self.session_id, **more)
