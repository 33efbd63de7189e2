"""An owner of a stream or bucket that a sibling makes at the same time on a NATS cluster: it looks again
while its server does not show the stream yet, makes it only while missing, takes a lost creation race
(``BadRequestError``) as made, and gives up after ``SETTLE_S`` with the last error."""

from __future__ import annotations

import pytest
from nats import errors as nats_errors
from nats.js import errors as js_errors

from corral.bus import settling


class Missing(Exception):
    pass


async def test_it_is_found_at_once_without_making_it() -> None:
    made: list[int] = []

    async def find() -> str:
        return "stream"

    async def make() -> object:
        made.append(1)
        return None

    assert await settling.find_or_make(find, make, missing=Missing) == "stream"
    assert made == []


async def test_a_lost_race_and_a_server_not_showing_it_yet_are_waited_out() -> None:
    answers: list[BaseException | str] = [Missing(), Missing(), nats_errors.TimeoutError(), "stream"]
    made = 0

    async def find() -> str:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def make() -> object:
        nonlocal made
        made += 1
        raise js_errors.BadRequestError()  # the sibling made it first

    assert await settling.find_or_make(find, make, missing=Missing) == "stream"
    assert made == 3


async def test_it_gives_up_after_settle_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settling, "SETTLE_S", 0.2)

    async def find() -> str:
        raise Missing()

    async def make() -> object:
        return None

    with pytest.raises(Missing):
        await settling.find_or_make(find, make, missing=Missing)


async def test_other_errors_are_not_retried() -> None:
    calls = 0

    async def find() -> str:
        nonlocal calls
        calls += 1
        raise js_errors.ServiceUnavailableError()

    async def make() -> object:
        return None

    with pytest.raises(js_errors.ServiceUnavailableError):
        await settling.find_or_make(find, make, missing=Missing)
    assert calls == 1


async def test_patiently_asks_again_while_unanswered() -> None:
    answers: list[BaseException | int] = [nats_errors.TimeoutError(), nats_errors.TimeoutError(), 7]

    async def step() -> int:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    assert await settling.patiently(step) == 7
