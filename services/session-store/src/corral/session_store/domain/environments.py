"""Resolving environment params into the stored ``environment`` object. Pure functions."""

from __future__ import annotations

from typing import Any

from corral.contracts.api.base import apply_metadata_patch
from corral.contracts.api.environments import (
    CloudConfigParams,
    Environment,
    EnvironmentConfigParams,
    EnvironmentCreateParams,
    EnvironmentUpdateParams,
    LimitedNetworking,
    PackagesParams,
)
from corral.contracts.api.errors import invalid
from corral.session_store.domain.unsupported import reject_self_hosted

PACKAGE_MANAGERS = ("apt", "cargo", "gem", "go", "npm", "pip")


def _packages(params: PackagesParams | None, current: dict[str, Any] | None) -> dict[str, Any]:
    resolved: dict[str, Any] = {"type": "packages"}
    for manager in PACKAGE_MANAGERS:
        value = getattr(params, manager) if params is not None else None
        if value is None:
            value = (current or {}).get(manager, [])
        resolved[manager] = list(value)
    return resolved


def _networking(params: Any, current: dict[str, Any] | None) -> dict[str, Any]:
    if params is None:
        return dict(current) if current else {"type": "unrestricted"}
    if isinstance(params, LimitedNetworking):
        return {
            "type": "limited",
            "allowed_hosts": list(params.allowed_hosts or []),
            "allow_mcp_servers": bool(params.allow_mcp_servers),
            "allow_package_managers": bool(params.allow_package_managers),
        }
    return {"type": "unrestricted"}


def resolve_config(params: EnvironmentConfigParams | None, current: dict[str, Any] | None = None) -> dict[str, Any]:
    """Full config; on update, sub-fields the request omits keep their current values."""
    if params is None:
        if current is not None:
            return current
        params = CloudConfigParams(type="cloud")
    if not isinstance(params, CloudConfigParams):
        return {"type": "self_hosted"}
    same_type = current is not None and current.get("type") == "cloud"
    networking = _networking(params.networking, current.get("networking") if same_type and current else None)
    packages = _packages(params.packages, current.get("packages") if same_type and current else None)
    limited = networking["type"] == "limited"
    if limited and any(packages[m] for m in PACKAGE_MANAGERS) and not networking["allow_package_managers"]:
        raise invalid("config.packages: limited networking needs allow_package_managers: true to install packages")
    return {"type": "cloud", "networking": networking, "packages": packages}


def create_environment(params: EnvironmentCreateParams, *, environment_id: str, now: str) -> Environment:
    reject_self_hosted(params.config.model_dump(mode="json") if params.config is not None else None)
    return Environment(
        id=environment_id,
        name=params.name,
        description=params.description,
        config=resolve_config(params.config),
        metadata=dict(params.metadata or {}),
        scope=params.scope or "organization",
        created_at=now,
        updated_at=now,
    )


def update_environment(
    current: Environment, params: EnvironmentUpdateParams, *, sent: set[str], now: str
) -> Environment | None:
    if current.archived_at is not None:
        raise invalid(
            f"environment {current.id!r} is archived and can no longer be updated; create a new environment",
            error_code="environment_archived",
        )
    if "name" in sent and params.name is None:
        raise invalid("name: cannot be cleared")
    if "config" in sent and params.config is not None:
        stored_type = current.config.get("type", "cloud")
        if params.config.type != stored_type:
            raise invalid(
                f"config.type: environment {current.id!r} is {stored_type!r} and cannot become "
                f"{params.config.type!r}; an environment's type is fixed when it is created, so create a new one",
                error_code="invalid_config_type_change",
            )
        reject_self_hosted(params.config.model_dump(mode="json"))
    data = current.model_dump(mode="json")
    if "name" in sent:
        data["name"] = params.name
    if "description" in sent:
        data["description"] = params.description or None
    if "config" in sent:
        data["config"] = resolve_config(params.config, current.config)
    if "metadata" in sent:
        data["metadata"] = apply_metadata_patch(current.metadata, params.metadata or {})
    if "scope" in sent and params.scope is not None:
        data["scope"] = params.scope
    if data == current.model_dump(mode="json"):
        return None
    data["updated_at"] = now
    return Environment.model_validate(data)
