"""sessions.create / get / update / list / archive / delete / context."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from corral.bus import Refused
from corral.contracts import ids, subjects
from corral.contracts.api.agents import AgentRef, McpServerParams
from corral.contracts.api.base import apply_metadata_patch
from corral.contracts.api.errors import ApiError, invalid, not_found
from corral.contracts.api.sessions import AgentWithOverrides, Session, SessionCreateParams, SessionUpdateParams
from corral.contracts.clock import now, now_rfc3339
from corral.contracts.log import CONTROL_RECORD_TYPES, SessionArchived, SessionCreated, SessionDeleted
from corral.contracts.rpc import (
    CreateObject,
    Deleted,
    GetContext,
    GetObject,
    ListObjects,
    LoggedEvent,
    ObjectAction,
    Page,
    SessionContext,
    UpdateObject,
)
from corral.session_store import queries
from corral.session_store.db import UNAVAILABLE
from corral.session_store.domain.agents import reject_archived, resolve_model, resolve_tools, snapshot
from corral.session_store.domain.repositories import session_resources
from corral.session_store.domain.sessions import (
    SessionRow,
    SessionState,
    ensure_exists,
    ensure_not_running,
    ensure_writable,
)
from corral.session_store.domain.unsupported import (
    reject_self_hosted,
    reject_unbuilt_agent_fields,
    reject_unbuilt_event,
)
from corral.session_store.handlers import agents, environments, vaults
from corral.session_store.service import Deps
from corral.session_store.session_projection import load_row, row_from_record

logger = logging.getLogger(__name__)


async def _agent_snapshot(deps: Deps, workspace_id: str, ref: str | AgentRef | AgentWithOverrides) -> dict[str, Any]:
    if isinstance(ref, AgentWithOverrides):
        reject_unbuilt_agent_fields(ref.model_dump(mode="json", exclude_unset=True), prefix="agent.")
    if isinstance(ref, str):
        agent, _ = await agents.load(deps, workspace_id, ref)
    else:
        agent, _ = await agents.load(deps, workspace_id, ref.id, ref.version)
    reject_archived(agent)
    snap = snapshot(agent)
    if isinstance(ref, AgentWithOverrides):
        sent = ref.model_fields_set
        if "model" in sent and ref.model is not None:
            snap["model"] = resolve_model(ref.model).model_dump(mode="json")
        if "system" in sent:
            snap["system"] = ref.system or None
        mcp = ref.mcp_servers if "mcp_servers" in sent and ref.mcp_servers is not None else None
        if mcp is not None:
            snap["mcp_servers"] = [s.model_dump(mode="json") for s in mcp]
        if "tools" in sent:
            servers = mcp if mcp is not None else [McpServerParams.model_validate(s) for s in snap["mcp_servers"]]
            snap["tools"] = resolve_tools(ref.tools or [], servers)
        if "skills" in sent:
            snap["skills"] = [
                {"type": s.type, "skill_id": s.skill_id, "version": s.version or "latest"} for s in ref.skills or []
            ]
    return snap


async def create(deps: Deps, req: CreateObject) -> dict[str, Any]:
    assert req.workspace_id is not None
    params = SessionCreateParams.model_validate(req.params)
    at = now_rfc3339()
    resources = session_resources(params.resources or [], at)
    for i, event in enumerate(params.initial_events or []):
        reject_unbuilt_event(event.type, where=f"initial_events.{i}")
    (env, _, _), snap, vault_ids = await asyncio.gather(
        environments.load(deps, req.workspace_id, params.environment_id),
        _agent_snapshot(deps, req.workspace_id, params.agent),
        vaults.attachable(deps, req.workspace_id, params.vault_ids or []),
    )
    if env.archived_at is not None:
        raise invalid(
            f"environment_id: environment {env.id!r} is archived and cannot be used by new sessions",
            error_code="environment_archived",
        )
    reject_self_hosted(env.config, field=f"environment_id: environment {env.id!r} has config")
    session = Session(
        id=ids.new_id(ids.SESSION),
        status="idle",
        title=params.title,
        environment_id=env.id,
        agent=snap,
        metadata=dict(params.metadata or {}),
        resources=resources,
        budget=params.budget.model_dump(mode="json") if params.budget else None,
        vault_ids=vault_ids,
        created_at=at,
        updated_at=at,
    )
    created = SessionCreated(workspace_id=req.workspace_id, session=session).model_dump(mode="json")
    initial = [e.model_dump(mode="json") for e in params.initial_events or []]

    def decide(_state: SessionState) -> list[dict[str, Any]]:
        return [created, *initial]

    # No wait for the projection here: every read of a session first waits for the projection to
    # reach what the log holds (see ``get``, ``list_`` and ``events.list_``).
    _, stored = await deps.log.append(session.id, decide, new=True)
    if initial:
        deps.wakes.send(session.id, stored[-1].seq, "initial_events")
        return await _read(deps, session.id, stored[-1].seq)
    return session.model_dump(mode="json")


async def _read(deps: Deps, session_id: str, seq: int) -> dict[str, Any]:
    """The session as the projection has it once it reached ``seq``."""
    await deps.caught_up_sessions(seq)
    async with deps.pool.acquire() as conn:
        row = await load_row(conn, session_id)
    if row.created_at is None:
        raise not_found("session", session_id)
    return row.session(now())


async def _state(deps: Deps, workspace_id: str | None, session_id: str) -> SessionState:
    state = await deps.log.state(session_id)
    ensure_exists(state, workspace_id)
    return state


async def get(deps: Deps, req: GetObject) -> dict[str, Any]:
    # Someone may have seen the session's latest event on a stream already: read at least that far.
    state = await deps.log.state(req.id)
    ensure_exists(state, req.workspace_id)
    try:
        return await _read(deps, req.id, max(state.record_seq, await deps.log.tail(req.id)))
    except UNAVAILABLE as exc:
        # Postgres is only a projection: fold the session from its log instead.
        logger.warning(
            "projection unavailable; serving the session from its log",
            extra={"fields": {"session_id": req.id, "error": type(exc).__name__}},
        )
        _, records = await deps.log.records(req.id)
        row = SessionRow(session_id=req.id)
        for stored in records:
            row.apply(stored.typed, stored.seq)
        return row.session(now())


async def update(deps: Deps, req: UpdateObject) -> dict[str, Any]:
    await _state(deps, req.workspace_id, req.id)
    params = SessionUpdateParams.model_validate(req.params)
    sent = set(req.params)
    if "vault_ids" in sent:
        raise invalid(
            "vault_ids: the vaults of a session are fixed when it is created and cannot be changed; create a new "
            "session with the vault_ids you need"
        )

    def decide(state: SessionState) -> list[dict[str, Any]]:
        ensure_exists(state, req.workspace_id)
        ensure_writable(state)
        changed: dict[str, Any] = {}
        current = state.session
        if "title" in sent and params.title != current.get("title"):
            changed["title"] = params.title
        if "metadata" in sent:
            merged = apply_metadata_patch(current.get("metadata") or {}, params.metadata or {})
            if merged != current.get("metadata"):
                changed["metadata"] = merged
        if "budget" in sent:
            if current.get("budget") is None and params.budget is not None:
                raise invalid("budget: a budget can only be set when the session is created")
            spent = state.list_cost
            if params.budget is not None and spent is not None and int(params.budget.max_list_cost.amount) <= spent:
                raise invalid(
                    f"budget.max_list_cost.amount: the session has already used {spent} (USD cents) at list "
                    "prices; set a budget above that, or remove the budget (budget: null)",
                    error_code="budget_not_raised",
                )
            budget = params.budget.model_dump(mode="json") if params.budget else None
            if budget != current.get("budget"):
                changed["budget"] = budget
        if "agent" in sent and params.agent is not None:
            reject_unbuilt_agent_fields(params.agent.model_dump(mode="json", exclude_unset=True), prefix="agent.")
            ensure_not_running(state, "change its agent")
            agent = dict(current.get("agent") or {})
            agent_sent = params.agent.model_fields_set
            servers = [McpServerParams.model_validate(s) for s in agent.get("mcp_servers", [])]
            if "mcp_servers" in agent_sent:
                servers = params.agent.mcp_servers or []
                agent["mcp_servers"] = [s.model_dump(mode="json") for s in servers]
            if "tools" in agent_sent:
                agent["tools"] = resolve_tools(params.agent.tools or [], servers)
            if agent != current.get("agent"):
                changed["agent"] = agent
        if not changed:
            return []
        return [{"type": "session.updated", **changed}]

    state, _ = await deps.log.append(req.id, decide)
    return await _read(deps, req.id, state.record_seq)


async def resource_update(deps: Deps, req: UpdateObject) -> dict[str, Any]:
    """A repository's token was rotated (by the credential-proxy): its ``updated_at`` moves now."""
    await _state(deps, req.workspace_id, req.id)
    resource_id = req.params.get("resource_id")
    if not isinstance(resource_id, str):
        raise invalid("resource_id: required")

    def decide(state: SessionState) -> list[dict[str, Any]]:
        ensure_exists(state, req.workspace_id)
        ensure_writable(state)
        resources = [dict(r) for r in state.session.get("resources") or [] if isinstance(r, dict)]
        found = [r for r in resources if r.get("id") == resource_id]
        if not found:
            raise not_found("resource", resource_id)
        if found[0].get("type") != "github_repository":
            raise invalid(f"resource {resource_id!r} is not a github_repository resource and has no token")
        found[0]["updated_at"] = now_rfc3339()
        return [{"type": "session.updated", "resources": resources}]

    state, _ = await deps.log.append(req.id, decide)
    session = await _read(deps, req.id, state.record_seq)
    return next(r for r in session.get("resources") or [] if r.get("id") == resource_id)


async def archive(deps: Deps, req: ObjectAction) -> dict[str, Any]:
    def decide(state: SessionState) -> list[dict[str, Any]]:
        ensure_exists(state, req.workspace_id)
        if state.archived:
            return []
        ensure_not_running(state, "archive")
        return [SessionArchived(archived_at=now_rfc3339()).model_dump(mode="json")]

    # The sandbox-manager reads the archive mark from the log and releases the sandbox on its own.
    state, _ = await deps.log.append(req.id, decide)
    return await _read(deps, req.id, state.record_seq)


async def delete(deps: Deps, req: ObjectAction) -> Deleted:
    def decide(state: SessionState) -> list[dict[str, Any]]:
        ensure_exists(state, req.workspace_id)
        ensure_not_running(state, "delete")
        return [SessionDeleted(deleted_at=now_rfc3339()).model_dump(mode="json")]

    state, _ = await deps.log.append(req.id, decide)
    await deps.caught_up_sessions(state.record_seq)
    # The tombstone stays; the rest of the history goes, as the API promises for delete.
    # The tombstone is what the sandbox-manager reads to release the sandbox, on its own.
    await deps.bus.purge(subjects.SESSIONS_STREAM, subjects.session_log(req.id), keep=1)
    if deps.subscriber_mirrors:  # a mirror does not follow purges: its copy goes the same way
        try:
            mirrors = deps.bus.mirrors()
            await mirrors.purge(subjects.SESSIONS_STREAM, subjects.session_log(req.id), below=state.record_seq)
        except Refused as exc:  # the session is deleted all the same; the operator has to purge the mirror
            fields = {"session_id": req.id, "below_seq": state.record_seq, "error": str(exc)}
            logger.error("the subscribers' mirror still holds the deleted session's history", extra={"fields": fields})
    return Deleted(id=req.id, type="session_deleted")


async def list_(deps: Deps, req: ListObjects) -> Page:
    assert req.workspace_id is not None
    extra: list[str] = []
    args: list[Any] = []
    if req.agent_id is not None:
        args.append(req.agent_id)
        extra.append(f"agent_id = ${len(args) + 1}")
    if req.agent_version is not None:
        args.append(req.agent_version)
        extra.append(f"agent_version = ${len(args) + 1}")
    if req.statuses:
        bad = [s for s in req.statuses if s not in ("idle", "running", "rescheduling", "terminated")]
        if bad:
            raise invalid(f"statuses: {bad[0]!r} is not a session status (idle, running, rescheduling, terminated)")
        args.append(req.statuses)
        extra.append(f"status = ANY(${len(args) + 1}::text[])")
    await deps.caught_up_sessions(deps.log.high_water)
    at = now()
    async with deps.pool.acquire() as conn:
        rows, next_page, prev_page = await queries.page_by_created(
            conn,
            table="sessions",
            id_column="session_id",
            workspace_id=req.workspace_id,
            params=req,
            order=req.order or "desc",
            extra=extra,
            extra_args=args,
            bidirectional=True,
        )
    return Page(data=[row_from_record(r).session(at) for r in rows], next_page=next_page, prev_page=prev_page)


async def context(deps: Deps, req: GetContext) -> SessionContext:
    state, records = await deps.log.records(req.session_id)
    ensure_exists(state, None)
    environment: dict[str, Any] | None = None
    try:
        env, _, _ = await environments.load(deps, None, str(state.session.get("environment_id")))
        environment = env.model_dump(mode="json")
    except ApiError:
        environment = None  # deleted since the session was created
    except UNAVAILABLE:
        environment = None  # the catalog projection is down; the turn can still run
    return SessionContext(
        environment=environment,
        session=state.session,
        workspace_id=state.workspace_id,
        last_seq=state.last_seq,
        events=[
            LoggedEvent(seq=s.seq, event=s.record) for s in records if s.record["type"] not in CONTROL_RECORD_TYPES
        ],
    )
