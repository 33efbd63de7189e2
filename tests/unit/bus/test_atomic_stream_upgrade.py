"""``ensure_stream`` on a session log made by an older Corral (no ``allow_atomic``): it is allowed
atomic batches, and a server that does not keep the setting (nats-server < 2.12 ignores the field)
or refuses the update is a ``StreamMismatch`` saying to upgrade the server, never a raw error. The
upgrade on a real nats-server is in tests/integration/bus/test_atomic_batches.py."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from nats.js import api as js_api
from nats.js import errors as js_errors

from corral.bus import StreamMismatch
from corral.bus.streams import ensure_stream
from corral.contracts.subjects import SESSIONS_SPEC


def made_without_atomic() -> js_api.StreamConfig:
    spec = SESSIONS_SPEC
    return js_api.StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=js_api.RetentionPolicy(spec.retention),
        storage=js_api.StorageType(spec.storage),
        duplicate_window=spec.duplicate_window_s,
        max_msgs_per_subject=spec.max_msgs_per_subject,
        deny_delete=spec.deny_delete,
        deny_purge=spec.deny_purge,
        max_msgs=-1,
        max_bytes=-1,
        max_age=0,
        num_replicas=1,
    )


class Server:
    """A JetStream API that keeps ``allow_atomic`` (2.12), ignores it (older) or refuses the update."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.config = made_without_atomic()
        self.updates = 0

    async def stream_info(self, name: str) -> js_api.StreamInfo:
        return js_api.StreamInfo(config=self.config, state=js_api.StreamState(0, 0, 0, 0, 0))  # type: ignore[call-arg]

    async def update_stream(self, config: js_api.StreamConfig) -> js_api.StreamInfo:
        self.updates += 1
        if self.behaviour == "refuses":
            raise js_errors.BadRequestError(code=400, err_code=10025, description="invalid JSON")
        kept = config if self.behaviour == "keeps" else dataclasses.replace(config, allow_atomic=None)
        self.config = kept
        return await self.stream_info(config.name or "")


async def test_a_server_that_keeps_the_setting_gets_the_stream_upgraded() -> None:
    server = Server("keeps")
    await ensure_stream(server, SESSIONS_SPEC)  # type: ignore[arg-type]
    assert server.updates == 1 and server.config.allow_atomic is True


@pytest.mark.parametrize("behaviour", ["ignores", "refuses"])
async def test_a_server_older_than_2_12_is_refused_with_what_to_do(behaviour: str) -> None:
    server: Any = Server(behaviour)
    with pytest.raises(StreamMismatch, match=r"needs nats-server 2\.12 or later: upgrade the server") as refused:
        await ensure_stream(server, SESSIONS_SPEC)
    assert SESSIONS_SPEC.name in str(refused.value)
