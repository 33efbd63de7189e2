"""Environments: sandbox templates (managed-agents-api.md section 3)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, Field, StringConstraints

from corral.contracts.api.base import Metadata, MetadataPatch, NonEmptyName, Request, Resource

#: What one ``packages`` entry may be: a name with the version, extras and scope punctuation the
#: package managers use (``jq``, ``jq=1.6-2.1``, ``pandas==2.2.0``, ``requests[socks]>=2,<3``,
#: ``@types/node@20``, ``rails:7.1.0``, ``golang.org/x/tools/gopls@latest``). No whitespace, quotes
#: or the shell's ``;|&$`()`` and friends, and never an option (a leading ``-``). The sandbox-manager
#: shell-quotes every entry as well; this pattern is what it and the API both accept.
PACKAGE_SPEC_PATTERN: Final = r"^[A-Za-z0-9@][A-Za-z0-9._+:=<>!~^,@/*\[\]-]*$"
PACKAGE_SPEC_MAX_LENGTH: Final = 256
_PACKAGE_SPEC = re.compile(PACKAGE_SPEC_PATTERN)


def package_spec_problem(value: str) -> str | None:
    """Why ``value`` is not an acceptable ``packages`` entry, or ``None`` when it is."""
    if not value:
        return "a package entry cannot be empty"
    if len(value) > PACKAGE_SPEC_MAX_LENGTH:
        return f"a package entry is at most {PACKAGE_SPEC_MAX_LENGTH} characters"
    if value.startswith("-"):
        return f"{value!r} looks like an option, not a package: entries cannot start with '-'"
    if not _PACKAGE_SPEC.fullmatch(value):
        return (
            f"{value!r} is not a package name: use letters, digits and the version punctuation "
            "._+:=<>!~^,@/*[]- only (no spaces, quotes or shell characters), starting with a letter, digit or '@'"
        )
    return None


def _check_package_spec(value: str) -> str:
    problem = package_spec_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


PackageSpec = Annotated[
    str,
    StringConstraints(min_length=1, max_length=PACKAGE_SPEC_MAX_LENGTH),
    AfterValidator(_check_package_spec),
    Field(json_schema_extra={"pattern": PACKAGE_SPEC_PATTERN}),
]


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
