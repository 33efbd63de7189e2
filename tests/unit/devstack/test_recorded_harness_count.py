"""``corral-dev status`` / ``down`` see as many harnesses as the last ``up`` started, not the default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.devstack.__main__ import _harness_count, _parser, main
from corral.devstack.services import service_names


def _record(state_dir: Path, harness_count: int) -> None:
    """What ``up`` records (``Stack._write_record``): its services and its harness count."""
    state_dir.mkdir(parents=True)
    record = {"harness_count": harness_count, "services": service_names(harness_count, embedded_model=True)}
    (state_dir / "stack.json").write_text(json.dumps(record))


@pytest.mark.parametrize("recorded", [1, 3])
def test_status_lists_the_harnesses_the_last_up_started(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, recorded: int
) -> None:
    monkeypatch.delenv("CORRAL_HARNESS_COUNT", raising=False)
    state_dir = tmp_path / "state"
    _record(state_dir, recorded)

    main(["--state-dir", str(state_dir), "status"])

    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("harness-")}
    assert listed == {f"harness-{i}" for i in range(1, recorded + 1)}


def test_a_stack_started_with_two_harnesses_is_still_two_for_every_later_command(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    _record(state_dir, 2)
    for command in ("status", "down", "logs"):
        assert _harness_count(_parser().parse_args(["--state-dir", str(state_dir), command]), state_dir) == 2
    up = _parser().parse_args(["--state-dir", str(state_dir), "up"])
    assert _harness_count(up, state_dir) is None  # `up` uses the configured count (default one)
