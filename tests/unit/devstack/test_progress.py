"""How ``corral-dev up`` reports its steps: plain timestamped lines without a terminal, a spinner
with the running step's elapsed seconds on one."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from rich.live import Live

from corral.devstack.progress import ConsoleProgress, step


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def at(hour: int, minute: int, second: int) -> datetime:
    return datetime(2026, 1, 1, hour, minute, second, tzinfo=UTC)


def test_without_a_terminal_each_step_and_outcome_is_a_timestamped_line() -> None:
    stream = io.StringIO()
    times = iter([at(9, 0, 1), at(9, 0, 9), at(9, 0, 9), at(9, 1, 2), at(9, 1, 2)])
    progress = ConsoleProgress(stream, wall=lambda: next(times))
    assert not progress.live  # a StringIO is no terminal: no spinner, no control codes

    with step(progress, "postgres          starting: first start, initdb"):
        pass
    progress("postgres          ready in 8.0s pid 42 port 5432")
    with step(progress, "sandbox-image     debootstrap"):
        progress("                    debootstrap done in 53.0s")
    progress("all up in 61.0s")

    assert stream.getvalue().splitlines() == [
        "  09:00:01 postgres          starting: first start, initdb ...",
        "  09:00:09 postgres          ready in 8.0s pid 42 port 5432",
        "  09:00:09 sandbox-image     debootstrap ...",
        "  09:01:02                     debootstrap done in 53.0s",
        "  09:01:02 all up in 61.0s",
    ]
    assert "\x1b" not in stream.getvalue()


def test_on_a_terminal_the_running_step_shows_its_elapsed_seconds_and_the_lines_stay() -> None:
    stream = io.StringIO()
    clock = Clock()
    progress = ConsoleProgress(stream, live=True, clock=clock)  # as to a terminal, into a StringIO

    with step(progress, "docker            starting dockerd"):
        clock.now += 12.4
        assert progress.running == ["docker            starting dockerd"]
        progress.refresh()
        progress("docker            ready in 12.4s")
    assert progress.running == []
    with Live(console=progress.console):  # would raise LiveError had the step's display not stopped
        pass

    output = stream.getvalue()
    assert "docker            starting dockerd 12s" in output
    assert "  docker            ready in 12.4s" in output


def test_a_plain_callable_gets_only_the_outcome_lines() -> None:
    lines: list[str] = []
    with step(lines.append, "nats              starting"):
        lines.append("nats              ready in 0.3s")
    assert lines == ["nats              ready in 0.3s"]


def test_a_failing_step_stops_the_spinner_and_lets_the_error_through() -> None:
    progress = ConsoleProgress(io.StringIO(), live=True)
    with pytest.raises(RuntimeError, match="initdb failed"), step(progress, "postgres          starting"):
        raise RuntimeError("initdb failed")
    assert progress.running == []
    with Live(console=progress.console):
        pass
