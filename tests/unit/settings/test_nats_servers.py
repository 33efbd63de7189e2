"""``CORRAL_NATS_URL`` takes a cluster's servers comma-separated; ``CORRAL_NATS_REPLICAS`` is bounded."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from corral.settings import NatsSettings


def test_one_server_or_a_comma_separated_list() -> None:
    assert NatsSettings().servers == ["nats://127.0.0.1:4222"]
    listed = NatsSettings(url="nats://a:4222, nats://b:4222 ,nats://c:4222")
    assert listed.servers == ["nats://a:4222", "nats://b:4222", "nats://c:4222"]


@pytest.mark.parametrize("url", ["nats://a:4222,,nats://b:4222", "nats://a:4222,", ""])
def test_an_empty_server_in_the_list_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="empty server address"):
        NatsSettings(url=url)


def test_replicas_are_read_from_the_environment_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert NatsSettings().replicas == 1
    monkeypatch.setenv("CORRAL_NATS_REPLICAS", "3")
    assert NatsSettings().replicas == 3
    for bad in ("0", "6"):
        monkeypatch.setenv("CORRAL_NATS_REPLICAS", bad)
        with pytest.raises(ValidationError):
            NatsSettings()
