"""``/v1/vaults`` and ``/v1/vaults/{vault_id}/credentials`` (API section 9).

Vaults and credential reads go to the session-store (public parts only). Everything that carries or
removes a secret (credential create, update, archive, delete, ``mcp_oauth_validate``, vault delete)
goes to the credential-proxy (``CredentialOps``), the only process that touches OpenBao; those
requests travel as one bus message, never through the bodies store, and their secret parts are
bounded (``SECRET_MAX_BYTES``) here, before anything is sent.
"""

from __future__ import annotations

from typing import Any, Final, TypeVar

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse

from corral.contracts import ids
from corral.contracts.api.errors import ApiError
from corral.contracts.api.vaults import (
    CredentialCreateParams,
    CredentialUpdateParams,
    VaultCreateParams,
    VaultUpdateParams,
    check_secret_size,
)
from corral.contracts.credentials import (
    SECRET_STORE_UNAVAILABLE,
    CreateCredential,
    CredentialAction,
    CredentialOps,
    DeleteVault,
    UpdateCredential,
)
from corral.contracts.operation import Operation
from corral.contracts.rpc import (
    CreateObject,
    CredentialRef,
    GetObject,
    ListObjects,
    ObjectAction,
    StoreOps,
    UpdateObject,
)
from corral.gateway.body import read_params
from corral.gateway.deps import Caller, StoreClient
from corral.gateway.errors import Unavailable
from corral.gateway.paths import object_id
from corral.gateway.query import Query
from corral.gateway.responses import deleted, ok, page
from corral.gateway.store import Store

router = APIRouter(prefix="/v1/vaults", tags=["vaults"])

DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 100

Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep")


def _vault_id(value: str) -> str:
    return object_id(value, prefix=ids.VAULT, kind="vault")


def _credential_id(value: str) -> str:
    return object_id(value, prefix=ids.CREDENTIAL, kind="credential")


async def _secret_call(store: Store, op: Operation[Req, Rep], request: Req) -> Rep:
    """A credential-proxy operation; OpenBao being unusable is a 503 (retry later), not a 529."""
    try:
        return await store.call(op, request)
    except ApiError as exc:
        if exc.error_code == SECRET_STORE_UNAVAILABLE:
            raise Unavailable("api_error", exc.message, error_code=SECRET_STORE_UNAVAILABLE) from None
        raise


def _listing(request: Request, workspace_id: str, vault_id: str | None = None) -> ListObjects:
    query = Query(request.query_params)
    return ListObjects(
        workspace_id=workspace_id,
        limit=query.integer("limit", default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
        page=query.text("page"),
        include_archived=query.boolean("include_archived"),
        vault_id=vault_id,
    )


# --- vaults ---------------------------------------------------------------------------------------------
@router.post("", response_model=None)
async def create_vault(request: Request, caller: Caller, store: StoreClient) -> JSONResponse:
    params = await read_params(request, VaultCreateParams)
    create = CreateObject(workspace_id=caller.workspace_id, params=params.model_dump(mode="json", exclude_unset=True))
    return ok(await store.call(StoreOps.VAULTS_CREATE, create))


@router.get("/{vault_id}", response_model=None)
async def retrieve_vault(vault_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    return ok(
        await store.call(StoreOps.VAULTS_GET, GetObject(workspace_id=caller.workspace_id, id=_vault_id(vault_id)))
    )


@router.post("/{vault_id}", response_model=None)
async def update_vault(request: Request, vault_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    target = _vault_id(vault_id)
    params = await read_params(request, VaultUpdateParams)
    update = UpdateObject(
        workspace_id=caller.workspace_id, id=target, params=params.model_dump(mode="json", exclude_unset=True)
    )
    return ok(await store.call(StoreOps.VAULTS_UPDATE, update))


@router.get("", response_model=None)
async def list_vaults(request: Request, caller: Caller, store: StoreClient) -> JSONResponse:
    return page(await store.call(StoreOps.VAULTS_LIST, _listing(request, caller.workspace_id)))


@router.post("/{vault_id}/archive", response_model=None)
async def archive_vault(vault_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    action = ObjectAction(workspace_id=caller.workspace_id, id=_vault_id(vault_id))
    return ok(await store.call(StoreOps.VAULTS_ARCHIVE, action))


@router.delete("/{vault_id}", response_model=None)
async def delete_vault(vault_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    """The credential-proxy removes every secret in the vault, then the deletion is recorded."""
    action = DeleteVault(workspace_id=caller.workspace_id, id=_vault_id(vault_id))
    return deleted(await _secret_call(store, CredentialOps.DELETE_VAULT, action))


# --- credentials ------------------------------------------------------------------------------------------
@router.post("/{vault_id}/credentials", response_model=None)
async def create_credential(request: Request, vault_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    target = _vault_id(vault_id)
    params = await read_params(request, CredentialCreateParams)
    check_secret_size(params.auth)
    create = CreateCredential(
        workspace_id=caller.workspace_id, vault_id=target, params=params.model_dump(mode="json", exclude_unset=True)
    )
    return ok(await _secret_call(store, CredentialOps.CREATE, create))


@router.get("/{vault_id}/credentials/{credential_id}", response_model=None)
async def retrieve_credential(vault_id: str, credential_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    ref = CredentialRef(
        workspace_id=caller.workspace_id, vault_id=_vault_id(vault_id), id=_credential_id(credential_id)
    )
    return ok(await store.call(StoreOps.CREDENTIALS_GET, ref))


@router.post("/{vault_id}/credentials/{credential_id}", response_model=None)
async def update_credential(
    request: Request, vault_id: str, credential_id: str, caller: Caller, store: StoreClient
) -> JSONResponse:
    vault, target = _vault_id(vault_id), _credential_id(credential_id)
    params = await read_params(request, CredentialUpdateParams)
    check_secret_size(params.auth)
    sent: dict[str, Any] = params.model_dump(mode="json", exclude_unset=True)
    update = UpdateCredential(workspace_id=caller.workspace_id, vault_id=vault, id=target, params=sent)
    return ok(await _secret_call(store, CredentialOps.UPDATE, update))


@router.get("/{vault_id}/credentials", response_model=None)
async def list_credentials(request: Request, vault_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    listing = _listing(request, caller.workspace_id, _vault_id(vault_id))
    return page(await store.call(StoreOps.CREDENTIALS_LIST, listing))


def _action(caller_workspace: str, vault_id: str, credential_id: str) -> CredentialAction:
    return CredentialAction(
        workspace_id=caller_workspace, vault_id=_vault_id(vault_id), id=_credential_id(credential_id)
    )


@router.post("/{vault_id}/credentials/{credential_id}/archive", response_model=None)
async def archive_credential(vault_id: str, credential_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    action = _action(caller.workspace_id, vault_id, credential_id)
    return ok(await _secret_call(store, CredentialOps.ARCHIVE, action))


@router.post("/{vault_id}/credentials/{credential_id}/mcp_oauth_validate", response_model=None)
async def validate_credential(vault_id: str, credential_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    action = _action(caller.workspace_id, vault_id, credential_id)
    return ok(await _secret_call(store, CredentialOps.VALIDATE, action))


@router.delete("/{vault_id}/credentials/{credential_id}", response_model=None)
async def delete_credential(vault_id: str, credential_id: str, caller: Caller, store: StoreClient) -> JSONResponse:
    action = _action(caller.workspace_id, vault_id, credential_id)
    return deleted(await _secret_call(store, CredentialOps.DELETE, action))
