"""A launch or an attach whose caller is cancelled while its Docker call still runs in a worker thread
closes the socket that call returns when it finishes (nobody else ever holds it), rather than leaving
it open until the garbage collector finds it."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from corral.sandbox_manager.containers import Driver
from tests.unit.sandbox_manager.test_launch_failure import SPEC
from tests.waiting import eventually


class HeldCall:
    """A Docker call that blocks its worker thread until released, then returns a socket the test
    keeps a reference to (so only an explicit close can close it, never the garbage collector)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.ours, self.peer = socket.socketpair()

    def __call__(self, *_: Any) -> socket.socket:
        self.entered.set()
        if not self.release.wait(timeout=30):
            raise TimeoutError("the test never released the call")
        return self.ours

    def close(self) -> None:
        self.release.set()
        self.ours.close()
        self.peer.close()


@pytest.fixture
def call() -> Iterator[HeldCall]:
    held = HeldCall()
    try:
        yield held
    finally:
        held.close()


@pytest.fixture
async def driver() -> AsyncIterator[Driver]:
    engine = Driver(docker_host="unix:///nonexistent/docker.sock", scope="test")  # never connected
    try:
        yield engine
    finally:
        await engine.aclose()


async def cancel_while_the_thread_runs(start: Callable[[], Awaitable[object]], call: HeldCall) -> None:
    task = asyncio.ensure_future(start())
    await asyncio.get_running_loop().run_in_executor(None, call.entered.wait, 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert call.ours.fileno() != -1  # the thread still holds the call: nothing to close yet
    call.release.set()

    async def closed() -> bool:
        return call.ours.fileno() == -1

    await eventually(closed, timeout=10)


async def test_an_attach_cancelled_while_docker_answers_closes_its_socket(driver: Driver, call: HeldCall) -> None:
    driver._attach = call  # type: ignore[method-assign]  # noqa: SLF001 (the Docker call itself)
    await cancel_while_the_thread_runs(lambda: driver.attach("c0ffee"), call)


async def test_a_launch_cancelled_while_docker_starts_it_closes_its_socket(driver: Driver, call: HeldCall) -> None:
    def launch(*args: Any) -> tuple[str, socket.socket]:
        return "c0ffee", call(*args)

    driver._launch = launch  # type: ignore[method-assign]  # noqa: SLF001 (the Docker call itself)
    await cancel_while_the_thread_runs(lambda: driver.launch(SPEC, "corral-sbx-test-1", {}), call)


async def test_an_attach_not_cancelled_hands_its_socket_over_open(driver: Driver, call: HeldCall) -> None:
    driver._attach = call  # type: ignore[method-assign]  # noqa: SLF001 (the Docker call itself)
    call.release.set()
    assert await driver.attach("c0ffee") is call.ours
    assert call.ours.fileno() != -1
