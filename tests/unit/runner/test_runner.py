"""``corral.runner``: the lifetime a composition root gets, and settings errors that name variables."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from corral.runner import Lifetime, Refused, serve
from corral.settings import LogSettings, NatsSettings, describe


class Inner(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CORRAL_THING_", frozen=True, extra="ignore")

    size: int = Field(default=1, ge=1)


class Outer(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CORRAL_", frozen=True, extra="ignore")

    probe_s: float = 1.0
    thing: Inner = Field(default_factory=Inner)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    log: LogSettings = Field(default_factory=LogSettings)


def error_of(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> str:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        Outer()
    return describe(caught.value, Outer)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("CORRAL_PROBE_S", "soon"), ("CORRAL_THING_SIZE", "0"), ("CORRAL_NATS_CONNECT_TIMEOUT_S", "-1")],
)
def test_a_settings_error_names_the_variable_even_in_a_nested_fragment(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    line = error_of(monkeypatch, variable, value)
    assert line.startswith(f"{variable}: "), line
    assert "\n" not in line


async def test_background_tasks_are_cancelled_at_stop_and_the_stack_closes_after_the_tasks() -> None:
    order: list[str] = []
    stop = asyncio.Event()
    ready = asyncio.Event()

    async def watcher() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            order.append("background cancelled")

    async def worker(life: Lifetime) -> None:
        await life.stop.wait()
        order.append("task finished")

    async def build(_settings: Outer, life: Lifetime) -> None:
        life.stack.callback(order.append, "stack closed")
        life.background(watcher(), name="watcher")
        life.tasks.create_task(worker(life))
        life.ready()

    running = asyncio.ensure_future(serve("thing", build, Outer(), stop, ready=ready))
    async with asyncio.timeout(5):
        await ready.wait()
        stop.set()
        await running
    assert order[-1] == "stack closed"
    assert set(order[:-1]) == {"background cancelled", "task finished"}


async def test_a_failing_task_ends_the_run_and_refused_carries_its_message() -> None:
    async def failing(_settings: Outer, life: Lifetime) -> None:
        async def boom() -> None:
            raise Refused("set CORRAL_THING_SIZE")

        life.tasks.create_task(boom())

    async with asyncio.timeout(5):
        with pytest.raises(BaseExceptionGroup) as caught:
            await serve("thing", failing, Outer(), asyncio.Event())
    [refused] = caught.value.exceptions
    assert isinstance(refused, Refused) and refused.exit_code == 2
