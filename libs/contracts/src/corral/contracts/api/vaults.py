"""Vaults and their credentials (managed-agents-api.md section 9).

A credential has public parts (what the API returns: its ``auth`` without secrets, ``display_name``,
``metadata``...) and secret parts (``token``, ``access_token``, ``refresh.refresh_token``,
``refresh.token_endpoint_auth.client_secret``, ``secret_value``). The secret parts travel from the
gateway to the credential-proxy only (``corral.contracts.credentials``), which keeps them in OpenBao;
the catalog log and Postgres hold the public ``Credential`` alone. ``split_secrets`` is the one place
that says which fields are secret.

A credential's secret parts are at most ``SECRET_MAX_BYTES`` together (UTF-8), so an oversize secret
is a 400 before anything is sent or written anywhere, and a
secret-carrying request always fits one bus message (it never spills into an object store):
``check_secret_size``, which the gateway calls before it sends anything.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import Field, StringConstraints

from corral.contracts.api.base import Metadata, MetadataPatch, Request, Resource
from corral.contracts.api.errors import invalid

SECRET_MAX_BYTES: Final = 65536
"""The most bytes (UTF-8) a credential's secret parts may hold together."""
SECRET_TOO_LARGE: Final = "credential_secret_too_large"
"""``error.details.error_code`` of a credential whose secret parts exceed ``SECRET_MAX_BYTES``."""
CREDENTIAL_TYPES: Final = ("mcp_oauth", "static_bearer", "environment_variable")

DisplayName = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2048, pattern=r"^https?://[^\s]+$")]
#: Secret fields are bounded together (``SECRET_MAX_BYTES``); this only keeps one from being empty.
Secret = Annotated[str, StringConstraints(min_length=1)]
ShortText = Annotated[str, StringConstraints(max_length=2048)]
SecretName = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
CredentialHost = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=253, pattern=r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9-]+)*\.?$"
    ),
]


# --- vaults --------------------------------------------------------------------------------------------
class VaultCreateParams(Request):
    display_name: DisplayName
    metadata: Metadata | None = None


class VaultUpdateParams(Request):
    display_name: DisplayName | None = None
    metadata: MetadataPatch | None = None


class Vault(Resource):
    type: Literal["vault"] = "vault"
    id: str
    display_name: str
    metadata: dict[str, str]
    archived_at: str | None = None
    created_at: str
    updated_at: str


# --- credential auth: requests --------------------------------------------------------------------------
class TokenEndpointAuthNone(Request):
    type: Literal["none"]


class TokenEndpointAuthSecret(Request):
    type: Literal["client_secret_basic", "client_secret_post"]
    client_secret: Secret


TokenEndpointAuth = Annotated[TokenEndpointAuthNone | TokenEndpointAuthSecret, Field(discriminator="type")]


class TokenEndpointAuthSecretUpdate(Request):
    type: Literal["client_secret_basic", "client_secret_post"]
    client_secret: Secret | None = None


class McpOAuthRefreshParams(Request):
    refresh_token: Secret
    client_id: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    token_endpoint: Url
    token_endpoint_auth: TokenEndpointAuth
    scope: ShortText | None = None
    resource: ShortText | None = None


class McpOAuthRefreshUpdateParams(Request):
    refresh_token: Secret | None = None
    scope: ShortText | None = None
    token_endpoint_auth: TokenEndpointAuthSecretUpdate | None = None


class UnrestrictedCredentialNetworking(Request):
    type: Literal["unrestricted"]


class LimitedCredentialNetworking(Request):
    type: Literal["limited"]
    allowed_hosts: Annotated[list[CredentialHost], Field(min_length=1, max_length=100)]


CredentialNetworking = Annotated[
    UnrestrictedCredentialNetworking | LimitedCredentialNetworking, Field(discriminator="type")
]


class InjectionLocation(Request):
    header: bool | None = None
    body: bool | None = None


class McpOAuthCreateParams(Request):
    type: Literal["mcp_oauth"]
    mcp_server_url: Url
    access_token: Secret
    expires_at: str | None = None
    refresh: McpOAuthRefreshParams | None = None


class StaticBearerCreateParams(Request):
    type: Literal["static_bearer"]
    mcp_server_url: Url
    token: Secret


class EnvironmentVariableCreateParams(Request):
    type: Literal["environment_variable"]
    secret_name: SecretName
    secret_value: Secret
    networking: CredentialNetworking
    injection_location: InjectionLocation | None = None


class McpOAuthUpdateParams(Request):
    type: Literal["mcp_oauth"]
    access_token: Secret | None = None
    expires_at: str | None = None
    refresh: McpOAuthRefreshUpdateParams | None = None


class StaticBearerUpdateParams(Request):
    type: Literal["static_bearer"]
    token: Secret | None = None


class EnvironmentVariableUpdateParams(Request):
    type: Literal["environment_variable"]
    secret_value: Secret | None = None
    networking: CredentialNetworking | None = None
    injection_location: InjectionLocation | None = None


AuthCreateParams = Annotated[
    McpOAuthCreateParams | StaticBearerCreateParams | EnvironmentVariableCreateParams, Field(discriminator="type")
]
AuthUpdateParams = Annotated[
    McpOAuthUpdateParams | StaticBearerUpdateParams | EnvironmentVariableUpdateParams, Field(discriminator="type")
]


def secret_size(secrets: dict[str, str | None]) -> int:
    """Bytes (UTF-8) of a credential's secret parts together."""
    return sum(len(value.encode("utf-8", "surrogatepass")) for value in secrets.values() if value)


def check_secret_size(auth: Any) -> None:
    """Refuse (400 ``credential_secret_too_large``) an ``auth`` whose secret parts exceed ``SECRET_MAX_BYTES``.

    The gateway checks it before it sends anything anywhere; the credential-proxy checks it again.
    """
    if auth is None:
        return
    size = secret_size(split_secrets(auth)[1])
    if size > SECRET_MAX_BYTES:
        raise invalid(
            f"auth: the credential's secret parts are {size} bytes together, more than the {SECRET_MAX_BYTES} "
            "bytes a credential may hold; store a shorter secret",
            error_code=SECRET_TOO_LARGE,
        )


class CredentialCreateParams(Request):
    auth: AuthCreateParams
    display_name: Annotated[str, StringConstraints(max_length=255)] | None = None
    metadata: Metadata | None = None


class CredentialUpdateParams(Request):
    auth: AuthUpdateParams | None = None
    display_name: DisplayName | None = None
    metadata: MetadataPatch | None = None


def split_secrets(auth: Any) -> tuple[dict[str, Any], dict[str, str | None]]:
    """``auth`` (a create or update params model) as its public JSON and its secret parts.

    The secret parts are a flat mapping, the document the credential-proxy keeps in OpenBao:
    ``token`` (static_bearer), ``access_token``, ``refresh_token``, ``client_secret`` (mcp_oauth),
    ``secret_value`` (environment_variable). An update's secret value ``None`` means "not sent".
    """
    public = auth.model_dump(mode="json", exclude_unset=True)
    secrets: dict[str, str | None] = {}
    for name in ("token", "access_token", "secret_value"):
        if name in public:
            secrets[name] = public.pop(name)
    refresh = public.get("refresh")
    if isinstance(refresh, dict):
        if "refresh_token" in refresh:
            secrets["refresh_token"] = refresh.pop("refresh_token")
        endpoint_auth = refresh.get("token_endpoint_auth")
        if isinstance(endpoint_auth, dict) and "client_secret" in endpoint_auth:
            secrets["client_secret"] = endpoint_auth.pop("client_secret")
    return public, secrets


# --- credentials: responses ------------------------------------------------------------------------------
class Credential(Resource):
    """What the API returns and the catalog stores: never a secret."""

    type: Literal["vault_credential"] = "vault_credential"
    id: str
    vault_id: str
    display_name: str | None = None
    auth: dict[str, Any]
    metadata: dict[str, str]
    archived_at: str | None = None
    created_at: str
    updated_at: str


class RefreshHttpResponse(Resource):
    status_code: int
    content_type: str
    body: str
    body_truncated: bool


class McpProbe(Resource):
    method: str
    http_response: RefreshHttpResponse | None = None


class RefreshOutcome(Resource):
    status: Literal["succeeded", "failed", "connect_error", "no_refresh_token"]
    http_response: RefreshHttpResponse | None = None


class CredentialValidation(Resource):
    type: Literal["vault_credential_validation"] = "vault_credential_validation"
    credential_id: str
    vault_id: str
    status: Literal["valid", "invalid", "unknown"]
    has_refresh_token: bool
    validated_at: str
    mcp_probe: McpProbe | None = None
    refresh: RefreshOutcome | None = None
