"""``vault_ids`` on sessions through the official SDK: attached at creation, checked against the
caller's workspace, returned on every read, and fixed once the session exists."""

from __future__ import annotations

import anthropic
import pytest

from corral.devstack.stack import Stack
from tests.e2e.test_vaults import other_workspace_client

pytestmark = pytest.mark.e2e


async def test_a_session_keeps_the_vaults_it_was_created_with(
    client: anthropic.AsyncAnthropic, agent_env: tuple[str, str]
) -> None:
    agent_id, env_id = agent_env
    first = await client.beta.vaults.create(display_name="session vault 1")
    second = await client.beta.vaults.create(display_name="session vault 2")

    session = await client.beta.sessions.create(
        agent=agent_id, environment_id=env_id, vault_ids=[first.id, second.id, first.id]
    )
    assert session.vault_ids == [first.id, second.id]  # in order, each once
    assert (await client.beta.sessions.retrieve(session.id)).vault_ids == [first.id, second.id]
    listed = [s async for s in client.beta.sessions.list(agent_id=agent_id)]
    assert [s.vault_ids for s in listed if s.id == session.id] == [[first.id, second.id]]

    plain = await client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    assert plain.vault_ids == []

    # the API reserves vault_ids on update: refused, and the session keeps its vaults
    with pytest.raises(anthropic.BadRequestError) as refused:
        await client.beta.sessions.update(session.id, vault_ids=[second.id])
    assert "vault_ids" in refused.value.message and "create a new session" in refused.value.message
    assert (await client.beta.sessions.retrieve(session.id)).vault_ids == [first.id, second.id]

    # a vault archived after the session was created stays listed on it
    await client.beta.vaults.archive(second.id)
    assert (await client.beta.sessions.retrieve(session.id)).vault_ids == [first.id, second.id]


async def test_an_archived_or_unknown_vault_is_refused_by_name(
    client: anthropic.AsyncAnthropic, agent_env: tuple[str, str]
) -> None:
    agent_id, env_id = agent_env
    good = await client.beta.vaults.create(display_name="good")
    archived = await client.beta.vaults.create(display_name="archived")
    await client.beta.vaults.archive(archived.id)
    before = {s.id async for s in client.beta.sessions.list(agent_id=agent_id)}

    with pytest.raises(anthropic.BadRequestError) as bad:
        await client.beta.sessions.create(agent=agent_id, environment_id=env_id, vault_ids=[good.id, archived.id])
    assert bad.value.status_code == 400
    assert f"vault_ids[1]: vault {archived.id!r} is archived" in bad.value.message
    assert bad.value.body["error"]["details"]["error_code"] == "vault_archived"  # type: ignore[index, call-overload]

    with pytest.raises(anthropic.NotFoundError) as missing:
        await client.beta.sessions.create(agent=agent_id, environment_id=env_id, vault_ids=["vlt_doesnotexist"])
    assert "vault_ids[0]: vault 'vlt_doesnotexist' was not found in this workspace" in missing.value.message
    assert missing.value.body["error"]["details"]["error_code"] == "vault_not_found"  # type: ignore[index, call-overload]

    assert {s.id async for s in client.beta.sessions.list(agent_id=agent_id)} == before, "no session was made"


async def test_another_workspaces_vault_is_not_found(
    stack: Stack, client: anthropic.AsyncAnthropic, agent_env: tuple[str, str]
) -> None:
    agent_id, env_id = agent_env
    async with await other_workspace_client(stack, "wrkspc_session_vaults") as other:
        theirs = await other.beta.vaults.create(display_name="theirs")
        with pytest.raises(anthropic.NotFoundError) as refused:
            await client.beta.sessions.create(agent=agent_id, environment_id=env_id, vault_ids=[theirs.id])
        assert f"vault {theirs.id!r} was not found in this workspace" in refused.value.message
        # and the owner attaches it as usual, to a session of its own workspace
        their_agent = await other.beta.agents.create(name="theirs", model="claude-sonnet-4-6")
        their_env = await other.beta.environments.create(name=f"theirs-{their_agent.id.lower()}")
        session = await other.beta.sessions.create(
            agent=their_agent.id, environment_id=their_env.id, vault_ids=[theirs.id]
        )
        assert session.vault_ids == [theirs.id]
