"""Each route sends the session-store the request it should, and answers in the SDK's shape."""

from __future__ import annotations

from typing import Any

from gateway_fakes import WORKSPACE, FakeStore, agent, client_for

from corral.contracts.rpc import (
    AppendEvents,
    CreateObject,
    GetObject,
    ListEvents,
    ListObjects,
    ObjectAction,
    Op,
    UpdateObject,
)


def page_of(*items: dict[str, Any], next_page: str | None = None, prev_page: str | None = None) -> dict[str, Any]:
    return {"data": list(items), "next_page": next_page, "prev_page": prev_page}


async def test_create_agent_forwards_only_the_fields_the_client_sent() -> None:
    store = FakeStore(replies={Op.AGENTS_CREATE: agent()})
    body = {
        "name": "a",
        "model": {"id": "claude-sonnet-4-6", "effort": "high"},
        "tools": [{"type": "agent_toolset_20260401", "default_config": {"enabled": True}}],
        "system": None,
    }
    async with client_for(store) as client:
        response = await client.post("/v1/agents", json=body)
    assert response.status_code == 200
    assert response.json() == agent()
    create = store.last(Op.AGENTS_CREATE)
    assert create == CreateObject(workspace_id=WORKSPACE, params=body)


async def test_update_agent_keeps_explicit_nulls_and_drops_absent_fields() -> None:
    store = FakeStore(replies={Op.AGENTS_UPDATE: agent(version=2)})
    async with client_for(store) as client:
        response = await client.post(
            "/v1/agents/agent_01AAA", json={"version": 1, "description": None, "metadata": {"k": None, "j": "v"}}
        )
    assert response.status_code == 200
    assert store.last(Op.AGENTS_UPDATE) == UpdateObject(
        workspace_id=WORKSPACE,
        id="agent_01AAA",
        params={"version": 1, "description": None, "metadata": {"k": None, "j": "v"}},
    )


async def test_retrieve_agent_passes_the_version() -> None:
    store = FakeStore(replies={Op.AGENTS_GET: agent()})
    async with client_for(store) as client:
        assert (await client.get("/v1/agents/agent_01AAA", params={"version": "3"})).status_code == 200
        assert (await client.get("/v1/agents/agent_01AAA", params={"version": "0"})).status_code == 400
    assert store.last(Op.AGENTS_GET) == GetObject(workspace_id=WORKSPACE, id="agent_01AAA", version=3)


async def test_archive_accepts_the_empty_json_body_the_sdk_sends() -> None:
    store = FakeStore(replies={Op.AGENTS_ARCHIVE: agent(archived_at="2026-01-02T00:00:00.000000Z")})
    async with client_for(store) as client:
        response = await client.post(
            "/v1/agents/agent_01AAA/archive", content=b"", headers={"content-type": "application/json"}
        )
    assert response.status_code == 200
    assert response.json()["archived_at"] == "2026-01-02T00:00:00.000000Z"
    assert store.last(Op.AGENTS_ARCHIVE) == ObjectAction(workspace_id=WORKSPACE, id="agent_01AAA")


async def test_list_agents_reads_paging_and_filters() -> None:
    store = FakeStore(replies={Op.AGENTS_LIST: page_of(agent(), next_page="cursor_2")})
    async with client_for(store) as client:
        response = await client.get(
            "/v1/agents?limit=5&page=cursor_1&include_archived=true&created_at%5Bgte%5D=2026-01-01T00:00:00%2B00:00"
        )
    assert response.json() == {"data": [agent()], "next_page": "cursor_2"}
    assert store.last(Op.AGENTS_LIST) == ListObjects(
        workspace_id=WORKSPACE,
        limit=5,
        page="cursor_1",
        include_archived=True,
        created_at_gte="2026-01-01T00:00:00.000000Z",
    )


async def test_list_agents_defaults_to_twenty_and_caps_at_one_hundred() -> None:
    store = FakeStore(replies={Op.AGENTS_LIST: page_of()})
    async with client_for(store) as client:
        assert (await client.get("/v1/agents")).status_code == 200
        assert (await client.get("/v1/agents?limit=101")).status_code == 400
    assert store.last(Op.AGENTS_LIST).limit == 20


async def test_agent_versions_are_listed_by_agent_id() -> None:
    store = FakeStore(replies={Op.AGENTS_VERSIONS: page_of(agent())})
    async with client_for(store) as client:
        response = await client.get("/v1/agents/agent_01AAA/versions?limit=2")
    assert response.json()["data"] == [agent()]
    assert store.last(Op.AGENTS_VERSIONS) == ListObjects(workspace_id=WORKSPACE, agent_id="agent_01AAA", limit=2)


async def test_delete_environment_answers_200_with_the_deletion_object() -> None:
    deleted = {"id": "env_01EEE", "type": "environment_deleted"}
    store = FakeStore(replies={Op.ENVIRONMENTS_DELETE: deleted})
    async with client_for(store) as client:
        response = await client.delete("/v1/environments/env_01EEE", headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert response.json() == deleted
    assert store.last(Op.ENVIRONMENTS_DELETE) == ObjectAction(workspace_id=WORKSPACE, id="env_01EEE")


async def test_list_sessions_reads_bracketed_statuses_and_answers_a_bidirectional_page() -> None:
    store = FakeStore(replies={Op.SESSIONS_LIST: page_of(next_page="n", prev_page="p")})
    async with client_for(store) as client:
        response = await client.get(
            "/v1/sessions?statuses%5B%5D=idle&statuses%5B%5D=running&agent_id=agent_01AAA&agent_version=2"
            "&created_at%5Blt%5D=2026-03-01T00:00:00Z"
        )
    assert response.json() == {"data": [], "next_page": "n", "prev_page": "p"}
    assert store.last(Op.SESSIONS_LIST) == ListObjects(
        workspace_id=WORKSPACE,
        agent_id="agent_01AAA",
        agent_version=2,
        statuses=["idle", "running"],
        order="desc",
        created_at_lt="2026-03-01T00:00:00.000000Z",
    )


async def test_list_sessions_refuses_an_unknown_status() -> None:
    async with client_for(FakeStore()) as client:
        response = await client.get("/v1/sessions?statuses[]=sleeping")
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("statuses[]: 'sleeping' is not one of")


async def test_update_session_forwards_a_null_title() -> None:
    store = FakeStore(replies={Op.SESSIONS_UPDATE: {"type": "session", "id": "sesn_01SSS"}})
    async with client_for(store) as client:
        response = await client.post("/v1/sessions/sesn_01SSS", json={"title": None})
    assert response.status_code == 200
    assert store.last(Op.SESSIONS_UPDATE).params == {"title": None}


async def test_create_session_accepts_the_agent_shorthand() -> None:
    store = FakeStore(replies={Op.SESSIONS_CREATE: {"type": "session", "id": "sesn_01SSS"}})
    async with client_for(store) as client:
        response = await client.post("/v1/sessions", json={"agent": "agent_01AAA", "environment_id": "env_01EEE"})
    assert response.status_code == 200
    assert store.last(Op.SESSIONS_CREATE).params == {"agent": "agent_01AAA", "environment_id": "env_01EEE"}


async def test_delete_session_answers_the_deletion_object() -> None:
    store = FakeStore(replies={Op.SESSIONS_DELETE: {"id": "sesn_01SSS", "type": "session_deleted"}})
    async with client_for(store) as client:
        response = await client.delete("/v1/sessions/sesn_01SSS")
    assert response.json() == {"id": "sesn_01SSS", "type": "session_deleted"}


async def test_send_events_appends_client_events_and_echoes_what_was_stored() -> None:
    stored = [
        {"type": "user.message", "id": "sevt_01X", "content": [{"type": "text", "text": "hi"}], "processed_at": None}
    ]
    store = FakeStore(replies={Op.EVENTS_APPEND: {"events": stored, "last_seq": 7}})
    events = [{"type": "user.message", "content": [{"type": "text", "text": "hi"}]}, {"type": "user.interrupt"}]
    async with client_for(store) as client:
        response = await client.post("/v1/sessions/sesn_01SSS/events", json={"events": events})
    assert response.status_code == 200
    assert response.json() == {"data": stored}
    assert store.last(Op.EVENTS_APPEND) == AppendEvents(
        workspace_id=WORKSPACE, session_id="sesn_01SSS", events=events, origin="client"
    )


async def test_list_events_validates_types_and_times() -> None:
    store = FakeStore(replies={Op.EVENTS_LIST: page_of()})
    async with client_for(store) as client:
        ok = await client.get(
            "/v1/sessions/sesn_01SSS/events?types%5B%5D=agent.message&types%5B%5D=session.status_idle"
            "&order=desc&created_at%5Bgt%5D=2026-01-01T00:00:00Z"
        )
        unknown_type = await client.get("/v1/sessions/sesn_01SSS/events?types[]=agent.nonsense")
        bad_time = await client.get("/v1/sessions/sesn_01SSS/events?created_at[lte]=tomorrow")
    assert ok.json() == {"data": [], "next_page": None}
    assert store.last(Op.EVENTS_LIST) == ListEvents(
        workspace_id=WORKSPACE,
        session_id="sesn_01SSS",
        limit=100,
        order="desc",
        types=["agent.message", "session.status_idle"],
        created_at_gt="2026-01-01T00:00:00.000000Z",
    )
    assert unknown_type.status_code == 400
    assert "agent.nonsense" in unknown_type.json()["error"]["message"]
    assert bad_time.status_code == 400
    assert bad_time.json()["error"]["message"].startswith("created_at[lte]: 'tomorrow'")
