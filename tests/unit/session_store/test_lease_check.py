"""A harness's append is taken only while the session's lease holds its token, and the lease is read
from the bucket's leader: on a cluster any replica may answer a direct get, one still catching up
included, whose lease can be the stale holder's from before another harness took the session over."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from corral.bus import Entry
from corral.contracts.api.errors import ApiError
from corral.contracts.rpc import AppendEvents, Lease
from corral.session_store.handlers import events


@dataclass
class Leases:
    """The lease bucket: the leader holds the new holder's lease, a lagging replica the old one's."""

    leader: dict[str, str] = field(default_factory=dict)
    lagging: dict[str, str] = field(default_factory=dict)

    async def get(self, key: str, *, leader: bool = False) -> Entry | None:
        token = (self.leader if leader else self.lagging).get(key)
        return None if token is None else Entry(json.dumps({"holder": "h", "token": token}).encode(), 1)


def append(token: str) -> AppendEvents:
    return AppendEvents(
        workspace_id="wrkspc_1", session_id="sesn_1", events=[], origin="harness", lease=Lease(holder="h", token=token)
    )


@dataclass
class Deps:
    leases: Leases


async def test_the_stale_holders_append_is_refused_whatever_a_lagging_replica_says() -> None:
    deps: Any = Deps(Leases(leader={"sesn_1": "new"}, lagging={"sesn_1": "old"}))
    with pytest.raises(ApiError) as refused:
        await events.check_lease(deps, append("old"))
    assert refused.value.error_code == "lease_lost"
    await events.check_lease(deps, append("new"))
