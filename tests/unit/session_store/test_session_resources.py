"""What the session log keeps of a session's resources: github_repository metadata, never a token."""

from __future__ import annotations

from typing import Any

import pytest

from corral.contracts.api.errors import ApiError
from corral.session_store.domain.repositories import session_resources

AT = "2026-01-01T00:00:00Z"


def repo(**extra: Any) -> dict[str, Any]:
    return {"type": "github_repository", "id": "sesrsc_01ABC", "url": "https://github.com/o/tool.git", **extra}


def test_a_repository_is_stored_with_its_default_mount_path() -> None:
    [stored] = session_resources([repo(checkout={"type": "branch", "name": "dev"})], AT)
    assert stored == {
        "type": "github_repository",
        "id": "sesrsc_01ABC",
        "url": "https://github.com/o/tool.git",
        "mount_path": "/workspace/tool",
        "checkout": {"type": "branch", "name": "dev"},
        "created_at": AT,
        "updated_at": AT,
    }


@pytest.mark.parametrize(
    ("resource", "field", "code"),
    [
        (repo(authorization_token="t"), "resources.0.authorization_token", None),
        (repo(mount_path="/etc/passwd"), "resources.0.mount_path", None),
        (repo(mount_path="/workspace/../etc"), "resources.0.mount_path", None),
        (repo(url="https://user:pw@github.com/o/r"), "resources.0.url", None),
        (repo(checkout={"type": "commit", "sha": "not-hex"}), "resources.0.checkout.sha", None),
        (repo(checkout={"type": "branch", "name": "-x"}), "resources.0.checkout.name", None),
        ({"type": "github_repository", "url": "https://github.com/o/r"}, "resources.0", None),
        ({"type": "file", "file_id": "file_1"}, "resources.0.type", "feature_not_supported"),
    ],
)
def test_bad_resources_are_refused_naming_the_field(resource: dict[str, Any], field: str, code: str | None) -> None:
    with pytest.raises(ApiError) as caught:
        session_resources([resource], AT)
    assert caught.value.message.startswith(field + ":") or caught.value.message.startswith(field + " "), (
        caught.value.message
    )
    assert caught.value.error_code == code


def test_two_repositories_cannot_share_a_mount_path() -> None:
    with pytest.raises(ApiError, match=r"resources\.1\.mount_path"):
        session_resources([repo(), repo(id="sesrsc_02DEF")], AT)
