"""Environments: sandbox templates (managed-agents-api.md section 3)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from corral.contracts.api.base import Metadata, MetadataPatch, NonEmptyName, Request, Resource

PackageSpec = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class UnrestrictedNetworking(Request):
    type: Literal["unrestricted"]


class LimitedNetworking(Request):
    type: Literal["limited"]
    allowed_hosts: list[Annotated[str, StringConstraints(min_length=1, max_length=253)]] | None = None
    allow_mcp_servers: bool | None = None
    allow_package_managers: bool | None = None


Networking = Annotated[UnrestrictedNetworking | LimitedNetworking, Field(discriminator="type")]


class PackagesParams(Request):
    type: Literal["packages"] | None = None
    apt: list[PackageSpec] | None = None
    cargo: list[PackageSpec] | None = None
    gem: list[PackageSpec] | None = None
    go: list[PackageSpec] | None = None
    npm: list[PackageSpec] | None = None
    pip: list[PackageSpec] | None = None


class CloudConfigParams(Request):
    type: Literal["cloud"]
    networking: Networking | None = None
    packages: PackagesParams | None = None


class SelfHostedConfigParams(Request):
    type: Literal["self_hosted"]


EnvironmentConfigParams = Annotated[CloudConfigParams | SelfHostedConfigParams, Field(discriminator="type")]
Scope = Literal["organization", "account"]


class EnvironmentCreateParams(Request):
    name: NonEmptyName
    config: EnvironmentConfigParams | None = None
    description: str | None = None
    metadata: Metadata | None = None
    scope: Scope | None = None


class EnvironmentUpdateParams(Request):
    name: NonEmptyName | None = None
    config: EnvironmentConfigParams | None = None
    description: str | None = None
    metadata: MetadataPatch | None = None
    scope: Scope | None = None


class Environment(Resource):
    type: Literal["environment"] = "environment"
    id: str
    name: str
    description: str | None = None
    config: dict[str, Any]
    metadata: dict[str, str]
    scope: Scope | None = "organization"
    archived_at: str | None = None
    created_at: str
    updated_at: str
