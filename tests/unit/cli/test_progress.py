"""The CLI's progress without a terminal (how tests, pipes and ``--no-progress`` see it) and the
note ``environments apply`` prints for an environment with packages."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from corral.cli.environments import image_note, packages_of
from corral.cli.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


def piped() -> tuple[Console, io.StringIO]:
    stream = io.StringIO()
    return Console(file=stream, width=200), stream


def test_without_a_terminal_a_finished_step_is_one_plain_line_with_its_duration() -> None:
    console, stream = piped()
    clock = Clock()
    progress = Progress(console, clock=clock)
    assert not progress.live
    with progress.step("looking up environment [dev]"):
        clock.now += 0.25
    with progress.step("creating environment [dev]"):
        clock.now += 1.5
    assert stream.getvalue().splitlines() == [
        "looking up environment [dev]: done in 0.2s",
        "creating environment [dev]: done in 1.5s",
    ]


def test_a_failing_step_leaves_no_line_for_the_error_to_be_the_only_one() -> None:
    console, stream = piped()
    with pytest.raises(ConnectionError), Progress(console).step("creating environment dev"):
        raise ConnectionError("gateway down")
    assert stream.getvalue() == ""


def test_on_a_terminal_the_spinner_is_gone_once_the_step_is_done() -> None:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=100)
    progress = Progress(console)
    assert progress.live
    with progress.step("creating environment dev"):
        pass
    assert "creating environment dev" in stream.getvalue()  # drawn while it ran
    assert "done in" not in stream.getvalue()  # no leftover line: the command's answer follows


def test_the_note_names_the_packages_an_image_is_built_with() -> None:
    environment = {
        "name": "data",
        "config": {
            "type": "cloud",
            "packages": {"type": "packages", "apt": ["jq", "curl"], "cargo": [], "pip": ["pandas==2.2.0"]},
        },
    }
    assert packages_of(environment) == "apt: jq, curl; pip: pandas==2.2.0"
    note = image_note(environment)
    assert note is not None and note.startswith("note: environment data lists packages (apt: jq, curl; pip:")
    assert "no build progress" in note


def test_no_note_without_packages() -> None:
    empty = {"type": "packages", "apt": [], "pip": []}
    assert image_note({"name": "dev", "config": {"type": "cloud", "packages": empty}}) is None
    assert image_note({"name": "dev", "config": {"type": "self_hosted"}}) is None
