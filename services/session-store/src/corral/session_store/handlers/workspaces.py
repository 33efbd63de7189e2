"""workspaces.create / get / update / list / archive (the admin API; organisation-wide).

Archiving a workspace archives every key of it too (``corral.api_key_updated`` records, which every
gateway follows), so its keys stop working at once; archiving again finishes that job if a crash
left some key active. The bootstrap workspace (``CORRAL_SESSION_STORE_BOOTSTRAP_WORKSPACE``) holds
the bootstrap keys and cannot be archived.
"""

from __future__ import annotations

from typing import Any

from corral.contracts import ids, subjects
from corral.contracts.admin_rpc import AdminCreate, AdminGet, AdminList, AdminPage, AdminUpdate
from corral.contracts.api.admin import DEFAULT_DISPLAY_COLOR, Workspace, WorkspaceCreateParams, WorkspaceUpdateParams
from corral.contracts.api.errors import ApiError, invalid, not_found
from corral.contracts.clock import now_rfc3339
from corral.contracts.log import WorkspaceSaved
from corral.session_store import pgtext, queries
from corral.session_store.handlers import apikeys
from corral.session_store.service import Deps


async def load(deps: Deps, workspace_id: str) -> tuple[Workspace, int]:
    row = await deps.pool.fetchrow("SELECT log_seq, body FROM workspaces WHERE workspace_id = $1", workspace_id)
    if row is None:
        raise not_found("workspace", workspace_id)
    return Workspace.model_validate(pgtext.load(row["body"])), row["log_seq"]


async def _save(deps: Deps, workspace: Workspace, expected: int, *, msg_id: str | None = None) -> dict[str, Any]:
    record = WorkspaceSaved(workspace=workspace)
    seq = await deps.catalog.append(
        subjects.workspace_log(workspace.id), record.model_dump(mode="json"), expected_last_seq=expected, msg_id=msg_id
    )
    await deps.settle_catalog_write(seq)
    return workspace.model_dump(mode="json")


async def create(deps: Deps, req: AdminCreate) -> dict[str, Any]:
    params = WorkspaceCreateParams.model_validate(req.params)
    workspace = Workspace(
        id=ids.new_id(ids.WORKSPACE),
        name=params.name,
        created_at=now_rfc3339(),
        display_color=params.display_color or DEFAULT_DISPLAY_COLOR,
    )
    return await _save(deps, workspace, expected=0)


async def ensure(deps: Deps, workspace_id: str, *, name: str) -> None:
    """Record the workspace ``workspace_id`` unless it is recorded (the bootstrap workspace, which
    existed as an id before workspaces were records)."""
    if await deps.pool.fetchrow("SELECT 1 FROM workspaces WHERE workspace_id = $1", workspace_id) is not None:
        return
    if await deps.bus.last_seq(subjects.CATALOG_STREAM, subjects.workspace_log(workspace_id)):
        return  # recorded, not projected yet
    workspace = Workspace(id=workspace_id, name=name, created_at=now_rfc3339())
    try:
        await _save(deps, workspace, expected=0, msg_id=f"workspace:{workspace_id}")
    except ApiError as exc:
        if exc.error_code != "concurrent_update":
            raise
        # recorded meanwhile: two session-stores starting together both found it missing


async def get(deps: Deps, req: AdminGet) -> dict[str, Any]:
    workspace, _ = await load(deps, req.id)
    return workspace.model_dump(mode="json")


async def update(deps: Deps, req: AdminUpdate) -> dict[str, Any]:
    current, seq = await load(deps, req.id)
    params = WorkspaceUpdateParams.model_validate(req.params)
    if current.archived_at is not None:
        raise invalid(f"workspace {current.id!r} is archived and cannot be changed; create a new workspace")
    changes = params.model_dump(exclude_unset=True, exclude_none=True)
    if not changes:
        return current.model_dump(mode="json")
    return await _save(deps, current.model_copy(update=changes), expected=seq)


async def list_(deps: Deps, req: AdminList) -> AdminPage:
    where = [] if req.include_archived else ["archived_at IS NULL"]
    rows, more = await queries.admin_page(
        deps.pool, table="workspaces", id_column="workspace_id", params=req, where=where, args=[]
    )
    return queries.admin_page_of([pgtext.load(r["body"]) for r in rows], more)


async def archive(deps: Deps, req: AdminGet) -> dict[str, Any]:
    current, seq = await load(deps, req.id)
    if current.id == deps.bootstrap_workspace:
        raise invalid(
            f"workspace {current.id!r} holds the bootstrap keys and cannot be archived; "
            "archive another workspace, or revoke keys one by one"
        )
    result = current
    if current.archived_at is None:
        result = current.model_copy(update={"archived_at": now_rfc3339()})
        await _save(deps, result, expected=seq)
    await apikeys.archive_all(deps, current.id)
    return result.model_dump(mode="json")
