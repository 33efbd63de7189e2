"""A fold over ``SessionRecord`` that leaves a record type unhandled is a mypy error (``assert_never``),
so a new event type added to the contracts fails type checking wherever a fold does not handle it."""

from __future__ import annotations

import textwrap
from pathlib import Path

from mypy import api

from corral.contracts.log import SESSION_RECORD_ADAPTER

FOLD = """
from typing import assert_never
from corral.contracts.api import events as ev
from corral.contracts.log import SessionArchived, SessionCreated, SessionDeleted, SessionRecord


def kind(record: SessionRecord) -> str:
    match record:
        case SessionCreated() | SessionArchived() | SessionDeleted():
            return "control"
        case {cases}:
            return "event"
        case _:
            assert_never(record)
"""


def _event_classes() -> list[str]:
    schema = SESSION_RECORD_ADAPTER.json_schema()
    names = [ref.rsplit("/", 1)[-1] for ref in schema["discriminator"]["mapping"].values()]
    return sorted(n for n in names if n not in ("SessionCreated", "SessionArchived", "SessionDeleted"))


def check(tmp_path: Path, classes: list[str]) -> tuple[str, int]:
    source = tmp_path / "fold.py"
    source.write_text(textwrap.dedent(FOLD.format(cases=" | ".join(f"ev.{c}()" for c in classes))))
    out, err, status = api.run(["--strict", "--no-incremental", "--cache-dir=/dev/null", str(source)])
    return out + err, status


def test_a_fold_that_handles_every_record_type_type_checks(tmp_path: Path) -> None:
    out, status = check(tmp_path, _event_classes())
    assert status == 0, out


def test_a_fold_missing_one_record_type_is_a_type_error_naming_it(tmp_path: Path) -> None:
    classes = _event_classes()
    missing = "SessionUpdated"
    assert missing in classes
    out, status = check(tmp_path, [c for c in classes if c != missing])
    assert status == 1
    assert "assert_never" in out and missing in out, out
