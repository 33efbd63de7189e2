"""The catalog projection folds typed records (``CatalogRecord``, decoded once where the projector reads
them): every record type is handled (a new one left unhandled is a mypy error), bodies are the typed
objects as the writer stored them, and a message no writer could have made is a record fault, which the
projector records in ``projection_errors`` and skips (the integration test checks that part on
Postgres)."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from mypy import api

from corral.contracts.log import CATALOG_RECORD_ADAPTER, parse_catalog_record
from corral.session_store import catalog_projection, pgtext
from corral.session_store.projector import RECORD_FAULTS

FIXTURES = Path(__file__).parents[3] / "proto" / "fixtures" / "catalog"


class FakeConn:
    """Records the statements a fold runs; ``rows`` answers ``fetchrow``/``fetch`` by table."""

    def __init__(self, rows: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self.rows = rows or {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def execute(self, sql: str, *args: Any) -> str:
        self.calls.append((sql, args))
        return "OK"

    async def executemany(self, sql: str, args: list[tuple[Any, ...]]) -> None:
        for one in args:
            self.calls.append((sql, one))

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        found = self.fetch_rows(sql)
        return found[0] if found else None

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return self.fetch_rows(sql)

    def fetch_rows(self, sql: str) -> list[dict[str, Any]]:
        table = sql.split(" FROM ", 1)[1].split()[0]
        return self.rows.get(table, [])

    def tables(self) -> list[tuple[str, str]]:
        """(verb, table) of every write, in order."""
        out = []
        for sql, _ in self.calls:
            words = sql.split()
            verb = words[0]
            table = words[2] if verb in ("INSERT", "DELETE") else words[1]
            out.append((verb, table))
        return out


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name / "v1" / "basic.json").read_text())
    return data


def apply(raw: dict[str, Any], conn: FakeConn, seq: int = 7) -> None:
    record = parse_catalog_record(json.dumps(raw).encode())
    asyncio.run(catalog_projection.apply_catalog_record(conn, record, seq))  # type: ignore[arg-type]


def test_an_agent_version_is_projected_with_the_body_the_writer_stored() -> None:
    raw = fixture("corral.agent_saved")
    conn = FakeConn()
    apply(raw, conn)
    assert conn.tables() == [("INSERT", "agent_versions"), ("INSERT", "agents")]
    (_, version_args), (_, agent_args) = conn.calls
    assert version_args[:3] == (raw["agent"]["id"], raw["agent"]["version"], raw["workspace_id"])
    assert pgtext.load(version_args[3]) == raw["agent"]
    assert agent_args[5] == 7 and pgtext.load(agent_args[6]) == raw["agent"]


def test_an_environment_is_projected_under_its_escaped_name() -> None:
    raw = fixture("corral.environment_saved")
    raw["environment"]["name"] = "nul\x00name"
    conn = FakeConn()
    apply(raw, conn)
    assert conn.tables() == [("INSERT", "environments")]
    args = conn.calls[0][1]
    assert args[2] == pgtext.key("nul\x00name")
    assert pgtext.load(args[6]) == raw["environment"]


def test_an_archive_marks_the_agent_and_every_version() -> None:
    raw = fixture("corral.agent_archived")
    body = pgtext.dump(fixture("corral.agent_saved")["agent"])
    conn = FakeConn({"agents": [{"body": body}], "agent_versions": [{"version": 1, "body": body}]})
    apply(raw, conn, seq=9)
    assert conn.tables() == [("UPDATE", "agents"), ("UPDATE", "agent_versions")]
    assert conn.calls[0][1][2] == 9
    assert pgtext.load(conn.calls[0][1][3])["archived_at"] == raw["archived_at"]
    assert pgtext.load(conn.calls[1][1][2])["archived_at"] == raw["archived_at"]


def test_an_archive_of_an_agent_not_projected_writes_nothing() -> None:
    conn = FakeConn()
    apply(fixture("corral.agent_archived"), conn)
    assert conn.calls == []


def test_deletes_and_api_keys() -> None:
    conn = FakeConn()
    apply(fixture("corral.environment_deleted"), conn)
    apply(fixture("corral.api_key_created"), conn)
    assert conn.tables() == [("DELETE", "environments"), ("INSERT", "api_keys")]
    key = fixture("corral.api_key_created")
    assert conn.calls[1][1][:3] == (key["key_id"], key["workspace_id"], key["key_sha256"])


def test_a_key_update_rewrites_the_projected_key_from_its_row() -> None:
    created = fixture("corral.api_key_created")
    row = {
        "key_id": created["key_id"],
        "workspace_id": created["workspace_id"],
        "name": created["name"],
        "created_at": None,
        "status": "active",
        "role": "admin",
        "body": pgtext.dump({"id": created["key_id"], "name": "bootstrap", "workspace_id": "default",
                             "created_at": created["created_at"], "role": "admin", "partial_key_hint": "sk-...abcd"}),
    }  # fmt: skip
    conn = FakeConn({"api_keys": [row]})
    apply(fixture("corral.api_key_updated"), conn, seq=11)
    assert conn.tables() == [("UPDATE", "api_keys")]
    key_id, name, status, seq, body = conn.calls[0][1]
    assert (key_id, name, status, seq) == (created["key_id"], "ci", "archived", 11)
    body = pgtext.load(body)
    assert body["status"] == "archived" and body["role"] == "admin" and body["partial_key_hint"] == "sk-...abcd"
    assert body["rate_limit"] == {"requests_per_second": 5.0, "burst": 10}


def test_a_key_update_of_a_key_not_projected_writes_nothing() -> None:
    conn = FakeConn()
    apply(fixture("corral.api_key_updated"), conn)
    assert conn.calls == []


def test_a_workspace_is_projected_with_its_body() -> None:
    raw = fixture("corral.workspace_saved")
    conn = FakeConn()
    apply(raw, conn, seq=3)
    assert conn.tables() == [("INSERT", "workspaces")]
    args = conn.calls[0][1]
    assert args[0] == raw["workspace"]["id"] and args[3] == 3 and pgtext.load(args[4]) == raw["workspace"]


@pytest.mark.parametrize(
    "data",
    [
        b'{"type": "corral.workspace_created", "workspace_id": "w"}',  # a type this reader does not know
        b'{"type": "corral.agent_saved", "workspace_id": "w"}',  # a field missing
        b"{}",
        b"null",
        b"\x00\xff\xfe",  # not JSON
        b'{"type": "corral.api_key_created", "name": "\\ud800"}',  # a lone surrogate
    ],
)
def test_a_message_no_writer_could_have_made_is_a_record_fault(data: bytes) -> None:
    with pytest.raises(RECORD_FAULTS):
        parse_catalog_record(data)


FOLD_SOURCE = Path(catalog_projection.__file__)


def check(tmp_path: Path, source: str) -> tuple[str, int]:
    path = tmp_path / "fold.py"
    path.write_text(source)
    out, err, status = api.run(["--strict", "--no-incremental", "--cache-dir=/dev/null", str(path)])
    return out + err, status


def test_the_catalog_fold_handles_every_record_type(tmp_path: Path) -> None:
    out, status = check(tmp_path, FOLD_SOURCE.read_text())
    assert status == 0, out
    mapping = CATALOG_RECORD_ADAPTER.json_schema()["discriminator"]["mapping"]
    names = {ref.rsplit("/", 1)[-1] for ref in mapping.values()}
    assert names == {
        "AgentSaved",
        "AgentArchived",
        "EnvironmentSaved",
        "EnvironmentDeleted",
        "VaultSaved",
        "VaultDeleted",
        "CredentialSaved",
        "CredentialDeleted",
        "ApiKeyCreated",
        "ApiKeyUpdated",
        "WorkspaceSaved",
    }


def test_a_new_catalog_record_type_left_unhandled_is_a_type_error(tmp_path: Path) -> None:
    """The real fold, with ``CatalogRecord`` widened by one record type it does not handle."""
    source = FOLD_SOURCE.read_text()
    widened = source.replace(
        "from corral.session_store.db import Conn\n",
        "from corral.session_store.db import Conn\n"
        + textwrap.dedent(
            """
            from typing import Literal
            from corral.contracts.api.base import Resource


            class WorkspaceCreated(Resource):
                type: Literal["corral.workspace_created"] = "corral.workspace_created"


            CatalogRecord = (
                AgentSaved | AgentArchived | EnvironmentSaved | EnvironmentDeleted | VaultSaved | VaultDeleted
                | CredentialSaved | CredentialDeleted | ApiKeyCreated | WorkspaceCreated
            )
            """
        ),
    ).replace("    CatalogRecord,\n", "")
    assert widened.count("WorkspaceCreated") == 2 and "    CatalogRecord,\n" not in widened
    out, status = check(tmp_path, widened)
    assert status == 1
    assert "assert_never" in out and "WorkspaceCreated" in out, out
