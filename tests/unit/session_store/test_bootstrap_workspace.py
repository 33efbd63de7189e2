"""Two session-stores starting together on a new stack both find the bootstrap workspace missing and
both record it: the one whose record is refused because the other's landed first carries on (CI: it
exited at start-up, and the stack with two stores never came up)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from corral.contracts.api.errors import ApiError, conflict
from corral.session_store.handlers import workspaces


class Missing:
    async def fetchrow(self, *_args: object) -> None:
        return None


class Unrecorded:
    async def last_seq(self, *_args: object) -> int:
        return 0


def deps(refusal: ApiError) -> Any:
    async def append(*_args: object, **_kwargs: object) -> int:
        raise refusal

    return cast(Any, SimpleNamespace(pool=Missing(), bus=Unrecorded(), catalog=SimpleNamespace(append=append)))


async def test_a_bootstrap_workspace_recorded_meanwhile_by_a_sibling_is_taken_as_recorded() -> None:
    refused = conflict(
        "the object was changed concurrently; retrieve it again and retry", error_code="concurrent_update"
    )
    await workspaces.ensure(deps(refused), "wrkspc_default", name="default")


async def test_any_other_refusal_still_fails_the_start() -> None:
    with pytest.raises(ApiError):
        await workspaces.ensure(deps(conflict("something else")), "wrkspc_default", name="default")
