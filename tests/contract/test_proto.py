"""proto/ matches the contracts, and every golden record ever committed still loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from corral.contracts.log import (
    CATALOG_RECORD_ADAPTER,
    SESSION_RECORD_ADAPTER,
    parse_catalog_record,
    parse_session_record,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = sorted((ROOT / "proto" / "fixtures").rglob("*.json"))


def test_proto_is_up_to_date_with_the_contracts() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_there_are_golden_fixtures_for_both_streams() -> None:
    groups = {p.relative_to(ROOT / "proto" / "fixtures").parts[0] for p in FIXTURES}
    assert groups == {"session", "catalog"}


@pytest.mark.parametrize(
    ("group", "adapter"), [("session", SESSION_RECORD_ADAPTER), ("catalog", CATALOG_RECORD_ADAPTER)], ids=str
)
def test_every_record_type_has_a_golden_fixture(group: str, adapter: object) -> None:
    """Each ``type`` a stream can hold has at least one fixture, so no record shape changes unnoticed."""
    schema = adapter.json_schema()  # type: ignore[attr-defined]
    types = set(schema["discriminator"]["mapping"])
    covered = {p.relative_to(ROOT / "proto" / "fixtures").parts[1] for p in FIXTURES if p.parts[-4] == group}
    assert types - covered == set(), f"add proto/fixtures/{group}/<type>/v1/basic.json for these"
    assert covered - types == set(), "fixtures for types the stream cannot hold"


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: str(p.relative_to(ROOT / "proto" / "fixtures")))
def test_every_golden_record_loads_and_keeps_its_type(path: Path) -> None:
    raw = json.loads(path.read_text())
    group, record_type = path.relative_to(ROOT / "proto" / "fixtures").parts[:2]
    parse = parse_session_record if group == "session" else parse_catalog_record
    record = parse(raw)
    assert record.type == record_type
    again = parse(record.model_dump(mode="json"))
    assert again == record
