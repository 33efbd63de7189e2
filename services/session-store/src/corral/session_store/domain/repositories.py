"""A session's ``resources`` as the session log keeps them: ``github_repository`` metadata only.

The gateway takes each repository's ``authorization_token`` out of the request (it goes to the
credential-proxy, never here) and gives each repository its ``id``. What is stored, and what the API
returns, is ``{type, id, url, mount_path, checkout, created_at, updated_at}``: ``mount_path``
defaults to ``/workspace/<repo-name>``. Other resource types (``file``, ``memory_store``) are not
supported yet (400 ``feature_not_supported``).
"""

from __future__ import annotations

import re
from typing import Any, Final

from corral.contracts.api.errors import ApiError, invalid
from corral.contracts.repositories import (
    RESOURCE_ID_PATTERN,
    default_mount_path,
    mount_path_problem,
    url_problem,
)
from corral.session_store.domain.unsupported import FEATURE_NOT_SUPPORTED

_KNOWN: Final = frozenset({"type", "id", "url", "checkout", "mount_path"})
_SHA: Final = re.compile(r"^[0-9a-fA-F]{4,64}$")
_BRANCH: Final = re.compile(r"^[^\x00-\x20\x7f~^:?*\[\\]{1,255}$")
MAX_RESOURCES: Final = 20


def session_resources(resources: list[dict[str, Any]], at: str) -> list[dict[str, Any]]:
    """The stored form of a create request's ``resources``.

    Raises:
        ApiError: 400 naming the first bad field; ``feature_not_supported`` for other resource types.
    """
    if len(resources) > MAX_RESOURCES:
        raise invalid(f"resources: at most {MAX_RESOURCES} resources per session")
    stored: list[dict[str, Any]] = []
    paths: set[str] = set()
    for index, resource in enumerate(resources):
        where = f"resources.{index}"
        kind = resource.get("type")
        if kind in ("file", "memory_store"):
            raise ApiError(
                "invalid_request_error",
                f"{where}.type: {kind} resources are not supported by this Corral version yet; "
                "github_repository resources are",
                error_code=FEATURE_NOT_SUPPORTED,
            )
        if kind != "github_repository":
            raise invalid(f"{where}.type: must be one of github_repository, file, memory_store")
        if "authorization_token" in resource:  # the gateway takes it out; it is never stored
            raise invalid(f"{where}.authorization_token: must be sent through the API gateway")
        unknown = sorted(set(resource) - _KNOWN)
        if unknown:
            raise invalid(f"{where}.{unknown[0]}: unknown field")
        resource_id = resource.get("id")
        if not isinstance(resource_id, str) or re.fullmatch(RESOURCE_ID_PATTERN, resource_id) is None:
            raise invalid(f"{where}: has no resource id (send it through the API gateway)")
        url = resource.get("url")
        if not isinstance(url, str):
            raise invalid(f"{where}.url: required, the repository's https:// url")
        problem = url_problem(url)
        if problem is not None:
            raise invalid(f"{where}.url: {problem}")
        mount_path = resource.get("mount_path")
        if mount_path is None:
            mount_path = default_mount_path(url)
        elif not isinstance(mount_path, str):
            raise invalid(f"{where}.mount_path: must be a string")
        else:
            mount_path = mount_path.rstrip("/")
            problem = mount_path_problem(mount_path)
            if problem is not None:
                raise invalid(f"{where}.mount_path: {problem}")
        if mount_path in paths:
            raise invalid(f"{where}.mount_path: {mount_path} is already another resource's; give a mount_path")
        paths.add(mount_path)
        stored.append(
            {
                "type": "github_repository",
                "id": resource_id,
                "url": url,
                "mount_path": mount_path,
                "checkout": _checkout(resource.get("checkout"), f"{where}.checkout"),
                "created_at": at,
                "updated_at": at,
            }
        )
    return stored


def _checkout(checkout: Any, where: str) -> dict[str, str] | None:
    if checkout is None:
        return None
    if not isinstance(checkout, dict):
        raise invalid(f"{where}: must be {{type: branch, name}} or {{type: commit, sha}}")
    kind = checkout.get("type")
    if kind == "branch":
        name = checkout.get("name")
        if set(checkout) - {"type", "name"} or not isinstance(name, str) or not _BRANCH.fullmatch(name):
            raise invalid(f"{where}.name: a branch name (no spaces, control characters or ~^:?*[\\)")
        if name.startswith("-") or ".." in name:
            raise invalid(f"{where}.name: {name!r} is not a branch name")
        return {"type": "branch", "name": name}
    if kind == "commit":
        sha = checkout.get("sha")
        if set(checkout) - {"type", "sha"} or not isinstance(sha, str) or not _SHA.fullmatch(sha):
            raise invalid(f"{where}.sha: a commit's hexadecimal sha")
        return {"type": "commit", "sha": sha.lower()}
    raise invalid(f"{where}.type: must be branch or commit")
