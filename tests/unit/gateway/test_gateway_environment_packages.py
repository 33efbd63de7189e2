"""An environment's ``packages`` are checked at the API edge: an entry that is not a package name is a
400 naming the field, and nothing reaches the store."""

from __future__ import annotations

from typing import Any

import pytest
from gateway_fakes import FakeStore, client_for

from corral.contracts.rpc import Op


def environment(**packages: list[str]) -> dict[str, Any]:
    return {"name": "e", "config": {"type": "cloud", "packages": {"type": "packages", **packages}}}


@pytest.mark.parametrize(
    ("manager", "entry", "why"),
    [
        ("apt", "jq; rm -rf /", "is not a package name"),
        ("pip", "$(x)", "is not a package name"),
        ("npm", "-oops", "looks like an option, not a package: entries cannot start with '-'"),
    ],
)
async def test_a_package_entry_that_is_not_a_name_is_a_400_naming_the_field(manager: str, entry: str, why: str) -> None:
    store = FakeStore()
    async with client_for(store) as client:
        response = await client.post("/v1/environments", json=environment(**{manager: ["jq", entry]}))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"config.packages.{manager}.1: {entry!r} {why}")
    assert Op.ENVIRONMENTS_CREATE not in store.ops()


async def test_package_entries_with_versions_and_extras_are_passed_on() -> None:
    body = environment(apt=["jq=1.6-2.1"], pip=["pandas==2.2.0", "requests[socks]>=2,<3"], npm=["@types/node@20"])
    created = {
        "type": "environment",
        "id": "env_01EEE",
        "name": "e",
        "description": None,
        "config": body["config"],
        "metadata": {},
        "scope": "organization",
        "archived_at": None,
        "created_at": "2026-01-01T00:00:00.000000Z",
        "updated_at": "2026-01-01T00:00:00.000000Z",
    }
    store = FakeStore(replies={Op.ENVIRONMENTS_CREATE: created})
    async with client_for(store) as client:
        response = await client.post("/v1/environments", json=body)
    assert response.status_code == 200, response.text
    assert store.last(Op.ENVIRONMENTS_CREATE).params["config"]["packages"] == body["config"]["packages"]
