"""Credential operations: the request and reply of every ``corral.rpc.credentials.<op>`` call.

The gateway sends every request that carries or removes a secret here, to the credential-proxy (the
only process that reads or writes OpenBao), never to the session-store. The credential-proxy keeps
the secret parts in OpenBao (KV v2, mount ``corral``, one secret per credential at
``workspaces/<workspace_id>/vaults/<vault_id>/credentials/<credential_id>``) and asks the
session-store to record the public parts in the catalog (``StoreOps.CREDENTIALS_SAVE`` and friends).

Order of writes, so nothing is ever half-written:

- create: the vault is looked up first (another workspace's is 404, an archived one 400), then the
  secret is written under a fresh credential id, then the catalog record; when the record fails,
  the secret is deleted again.
- update: a changed secret is written first (the old one kept aside), then the record; when the
  record fails, the old secret is written back.
- archive and delete: the secret is removed (every version) first, then the archive or deletion is
  recorded, so a credential is never usable without its record saying so, and a retry finishes a
  half-done delete.
- vault delete: every credential's secret in the vault is removed, then the vault's deletion is
  recorded (its credentials go with it).

Requests are ``secret`` operations: they travel as one bus message or not at all, never through the
bodies object store. Replies never hold a secret. Errors: ``not_found_error`` (the vault or
credential is not in the caller's workspace), ``invalid_request_error`` (bad params, a type change,
an archived vault or credential), ``overloaded_error`` with ``error_code`` ``secret_store_unavailable``
when OpenBao cannot be reached, is sealed or refuses the credential-proxy (retry once it is back).
"""

from __future__ import annotations

from typing import Any, Final, TypeVar

from pydantic import BaseModel

from corral.contracts.operation import Operation, operation
from corral.contracts.rpc import ApiObject, Deleted, Message
from corral.contracts.subjects import CREDENTIALS_QUEUE, credentials_rpc

SECRET_STORE_UNAVAILABLE: Final = "secret_store_unavailable"
"""``error.details.error_code`` when OpenBao cannot be used right now."""


class CredentialOp:
    """Operation names; each is the last part of its request subject."""

    CREATE = "create"
    UPDATE = "update"
    ARCHIVE = "archive"
    DELETE = "delete"
    VALIDATE = "validate"
    DELETE_VAULT = "delete_vault"


class CreateCredential(Message):
    """``params``: the validated ``CredentialCreateParams`` JSON, secrets included."""

    workspace_id: str
    vault_id: str
    params: dict[str, Any]


class UpdateCredential(Message):
    """``params``: the validated ``CredentialUpdateParams`` JSON, only the fields the client sent."""

    workspace_id: str
    vault_id: str
    id: str
    params: dict[str, Any]


class CredentialAction(Message):
    """archive / delete / validate one credential."""

    workspace_id: str
    vault_id: str
    id: str


class DeleteVault(Message):
    workspace_id: str
    id: str


_Req = TypeVar("_Req", bound=BaseModel)
_Rep = TypeVar("_Rep")


def _credentials(name: str, request: type[_Req], reply: type[_Rep]) -> Operation[_Req, _Rep]:
    return operation(
        name,
        credentials_rpc(name),
        request,
        reply,
        queue=CREDENTIALS_QUEUE,
        service="credential-proxy",
        secret=True,
    )


class CredentialOps:
    """Every ``corral.rpc.credentials.<op>`` operation (queue group ``credential-proxy``)."""

    CREATE: Final = _credentials(CredentialOp.CREATE, CreateCredential, ApiObject)
    UPDATE: Final = _credentials(CredentialOp.UPDATE, UpdateCredential, ApiObject)
    ARCHIVE: Final = _credentials(CredentialOp.ARCHIVE, CredentialAction, ApiObject)
    DELETE: Final = _credentials(CredentialOp.DELETE, CredentialAction, Deleted)
    #: ``mcp_oauth_validate``: a ``CredentialValidation`` judged from what is stored.
    VALIDATE: Final = _credentials(CredentialOp.VALIDATE, CredentialAction, ApiObject)
    DELETE_VAULT: Final = _credentials(CredentialOp.DELETE_VAULT, DeleteVault, Deleted)

    ALL: Final[tuple[Operation[Any, Any], ...]] = (CREATE, UPDATE, ARCHIVE, DELETE, VALIDATE, DELETE_VAULT)
