"""The session-store keeps the agents and environments sessions are created from in memory: a session
created right after a catalog change sees it, whether the change was made through this store
(update, archive, delete) or reached the catalog stream from elsewhere (another store)."""

from __future__ import annotations

import anthropic
import pytest

from corral.bus import Bus
from corral.contracts import subjects
from corral.contracts.api.agents import Agent
from corral.contracts.log import AgentSaved
from corral.devstack.services import BOOTSTRAP_WORKSPACE
from tests.waiting import eventually

pytestmark = pytest.mark.e2e


async def test_a_session_created_right_after_a_catalog_change_sees_it(
    client: anthropic.AsyncAnthropic, agent_env: tuple[str, str]
) -> None:
    agent_id, env_id = agent_env
    first = await client.beta.sessions.create(agent=agent_id, environment_id=env_id)  # fills the cache
    assert first.agent.version == 1 and first.agent.system == "Be brief."

    updated = await client.beta.agents.update(agent_id, version=1, system="Be thorough.")
    second = await client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    assert (second.agent.version, second.agent.system) == (updated.version, "Be thorough.")
    # a pinned older version is still served as it was
    pinned = await client.beta.sessions.create(
        agent={"type": "agent", "id": agent_id, "version": 1}, environment_id=env_id
    )
    assert (pinned.agent.version, pinned.agent.system) == (1, "Be brief.")

    await client.beta.environments.archive(env_id)
    with pytest.raises(anthropic.BadRequestError, match="archived"):
        await client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    await client.beta.environments.delete(env_id)
    with pytest.raises(anthropic.NotFoundError):
        await client.beta.sessions.create(agent=agent_id, environment_id=env_id)

    other_env = await client.beta.environments.create(name=f"cache-{agent_id.lower()}")
    await client.beta.sessions.create(agent=agent_id, environment_id=other_env.id)
    await client.beta.agents.archive(agent_id)
    with pytest.raises(anthropic.BadRequestError, match="archived"):
        await client.beta.sessions.create(agent=agent_id, environment_id=other_env.id)


async def test_a_catalog_record_stored_by_another_writer_reaches_the_cache(
    client: anthropic.AsyncAnthropic, agent_env: tuple[str, str], bus: Bus
) -> None:
    """A record this store did not write (as another session-store would) reaches it through the
    catalog stream: sessions created after it is stored soon show it."""
    agent_id, env_id = agent_env
    await client.beta.sessions.create(agent=agent_id, environment_id=env_id)  # fills the cache
    agent = Agent.model_validate((await client.beta.agents.retrieve(agent_id)).model_dump(mode="json"))
    newer = agent.model_copy(update={"version": agent.version + 1, "system": "Written elsewhere."})
    record = AgentSaved(workspace_id=BOOTSTRAP_WORKSPACE, agent=newer)
    await bus.publish(subjects.agent_log(agent_id), record.model_dump_json().encode())

    async def shows_it() -> bool:
        session = await client.beta.sessions.create(agent=agent_id, environment_id=env_id)
        if session.agent.version != newer.version:
            return False
        assert session.agent.system == "Written elsewhere."
        return True

    await eventually(shows_it, timeout=10)
