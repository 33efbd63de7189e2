"""A create request's repository tokens leave it at the gateway: what goes on holds none."""

from __future__ import annotations

import pytest

from corral.contracts.api.errors import ApiError
from corral.contracts.repositories import RepositoryOps
from corral.gateway.repositories import take_tokens


def test_each_repository_gets_an_id_and_loses_its_token() -> None:
    taken = take_tokens(
        [
            {"type": "github_repository", "url": "https://github.com/o/a", "authorization_token": "repo-token-x"},
            {"type": "github_repository", "url": "https://github.com/o/b", "id": "sesrsc_CHOSEN"},
            {"type": "file", "file_id": "file_1"},
        ]
    )
    first, second, other = taken.resources
    assert "authorization_token" not in first and first["id"].startswith("sesrsc_")
    assert second["id"] != "sesrsc_CHOSEN", "a client does not choose the id"
    assert other == {"type": "file", "file_id": "file_1"}
    assert taken.tokens == {first["id"]: "repo-token-x", second["id"]: None}
    assert "repo-token-x" not in repr(taken.resources)


@pytest.mark.parametrize("token", ["", 7, "a b", "x" * 4097])
def test_a_malformed_token_is_refused_naming_the_field(token: object) -> None:
    with pytest.raises(ApiError) as caught:
        take_tokens([{"type": "github_repository", "url": "https://github.com/o/a", "authorization_token": token}])
    assert caught.value.message.startswith("resources.0.authorization_token:")
    assert caught.value.status == 400


def test_only_the_register_request_carries_a_token_and_it_is_never_spilled() -> None:
    """``register`` is a ``secret`` operation: the bus sends it as one message or refuses it, never
    through the bodies object store (a stream); ``forget`` and ``check`` carry no token."""
    assert RepositoryOps.REGISTER.secret
    assert not RepositoryOps.FORGET.secret and not RepositoryOps.CHECK.secret
