"""What the API defines but Corral does not build yet is refused with a 400 saying so (never stored and
then ignored), and the errors the SDK has typed classes for arrive as those classes."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import anthropic
import pytest
from anthropic.types.beta.beta_environment_archived_error import BetaEnvironmentArchivedError
from anthropic.types.beta.beta_invalid_config_type_change_error import BetaInvalidConfigTypeChangeError
from anthropic.types.beta.beta_invalid_metadata_error import BetaInvalidMetadataError

from corral.bus import Bus
from corral.contracts import subjects
from corral.contracts.rpc import CreateApiKey, Op, RpcReply
from corral.devstack.stack import Stack
from tests.e2e.flows import unique

pytestmark = pytest.mark.e2e

UNBUILT_AGENT_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"skills": [{"type": "anthropic", "skill_id": "xlsx"}]}, "skills"),
    ({"skills": [{"type": "custom", "skill_id": "skill_01ThisCannotExist"}]}, "skills"),
    ({"multiagent": {"type": "coordinator", "agents": [{"type": "self"}]}}, "multiagent"),
]
IDS = ["anthropic-skill", "custom-skill", "multiagent"]


def assert_not_supported(err: anthropic.APIStatusError, field: str) -> None:
    assert err.status_code == 400, err
    assert isinstance(err, anthropic.BadRequestError)
    body = err.body
    assert isinstance(body, dict)
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["details"] == {"error_code": "feature_not_supported"}
    message = body["error"]["message"]
    assert message.startswith(f"{field}: ") and "not supported yet" in message, message


async def agent_names(client: anthropic.AsyncAnthropic) -> set[str]:
    return {agent.name async for agent in client.beta.agents.list(limit=100)}


@pytest.mark.parametrize(("fields", "field"), UNBUILT_AGENT_FIELDS, ids=IDS)
async def test_an_agent_with_an_unbuilt_feature_is_refused_on_create_and_update(
    client: anthropic.AsyncAnthropic, fields: dict[str, Any], field: str
) -> None:
    name = unique("unbuilt")
    with pytest.raises(anthropic.BadRequestError) as err:
        await client.beta.agents.create(name=name, model="claude-sonnet-4-6", **fields)
    assert_not_supported(err.value, field)
    assert name not in await agent_names(client)  # nothing was stored

    agent = await client.beta.agents.create(name=name, model="claude-sonnet-4-6")
    with pytest.raises(anthropic.BadRequestError) as err:
        await client.beta.agents.update(agent.id, version=agent.version, **fields)
    assert_not_supported(err.value, field)
    assert (await client.beta.agents.retrieve(agent.id)).version == 1


@pytest.mark.parametrize(("fields", "field"), UNBUILT_AGENT_FIELDS[:2], ids=IDS[:2])
async def test_a_session_overriding_the_agent_with_an_unbuilt_feature_is_refused(
    client: anthropic.AsyncAnthropic, agent_env: tuple[str, str], fields: dict[str, Any], field: str
) -> None:
    agent_id, env_id = agent_env
    title = unique("override")
    with pytest.raises(anthropic.BadRequestError) as err:
        await client.beta.sessions.create(
            agent={"type": "agent_with_overrides", "id": agent_id, **fields}, environment_id=env_id, title=title
        )
    assert_not_supported(err.value, f"agent.{field}")
    assert title not in {s.title async for s in client.beta.sessions.list(agent_id=agent_id)}


async def test_a_self_hosted_environment_is_refused_and_the_config_type_cannot_change(
    client: anthropic.AsyncAnthropic,
) -> None:
    name = unique("self-hosted")
    with pytest.raises(anthropic.BadRequestError) as err:
        await client.beta.environments.create(name=name, config={"type": "self_hosted"})
    assert_not_supported(err.value, "config.type")
    assert name not in {env.name async for env in client.beta.environments.list(limit=100)}

    env = await client.beta.environments.create(name=name)
    with pytest.raises(BetaInvalidConfigTypeChangeError) as changed:
        await client.beta.environments.update(env.id, config={"type": "self_hosted"})
    assert changed.value.status_code == 400 and changed.value.error_code == "invalid_config_type_change"
    assert "'cloud'" in changed.value.message and "create a new one" in changed.value.message
    assert (await client.beta.environments.retrieve(env.id)).config.type == "cloud"


async def test_updating_an_archived_environment_is_the_sdks_environment_archived_error(
    client: anthropic.AsyncAnthropic,
) -> None:
    env = await client.beta.environments.create(name=unique("archived"))
    await client.beta.environments.archive(env.id)
    with pytest.raises(BetaEnvironmentArchivedError) as err:
        await client.beta.environments.update(env.id, name=unique("renamed"))
    assert err.value.status_code == 400 and err.value.error_code == "environment_archived"
    assert (await client.beta.environments.retrieve(env.id)).name == env.name


@pytest.mark.parametrize(
    ("metadata", "mention"),
    [
        ({f"k{i}": "v" for i in range(17)}, "17 keys"),
        ({"k" * 65: "v"}, "keys are at most 64"),
        ({"k": "v" * 513}, "values are at most 512"),
    ],
    ids=["too-many-keys", "long-key", "long-value"],
)
async def test_metadata_over_the_limits_is_the_sdks_invalid_metadata_error(
    client: anthropic.AsyncAnthropic, metadata: dict[str, str], mention: str
) -> None:
    with pytest.raises(BetaInvalidMetadataError) as err:
        await client.beta.agents.create(name=unique("meta"), model="claude-sonnet-4-6", metadata=metadata)
    assert err.value.status_code == 400 and mention in err.value.message


async def test_a_metadata_patch_that_would_leave_too_many_keys_is_invalid_metadata(
    client: anthropic.AsyncAnthropic, agent_env: tuple[str, str]
) -> None:
    agent_id, env_id = agent_env
    full = {f"k{i}": "v" for i in range(16)}
    session = await client.beta.sessions.create(agent=agent_id, environment_id=env_id, metadata=full)
    with pytest.raises(BetaInvalidMetadataError) as err:
        await client.beta.sessions.update(session.id, metadata={"one_more": "v"})
    assert "17 keys" in err.value.message
    assert (await client.beta.sessions.retrieve(session.id)).metadata == full


@pytest.mark.parametrize(
    ("event", "mention"),
    [
        (
            {"type": "user.define_outcome", "description": "a report", "rubric": {"type": "text", "content": "ok"}},
            "outcomes are not supported yet",
        ),
        ({"type": "system.message", "content": [{"type": "text", "text": "be terse"}]}, "system messages"),
    ],
    ids=["user.define_outcome", "system.message"],
)
async def test_unbuilt_client_events_say_not_supported_yet_and_leave_the_log_unchanged(
    client: anthropic.AsyncAnthropic, agent_env: tuple[str, str], event: dict[str, Any], mention: str
) -> None:
    agent_id, env_id = agent_env
    session = await client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    with pytest.raises(anthropic.BadRequestError) as err:
        await client.beta.sessions.events.send(session.id, events=[event])  # type: ignore[list-item]
    assert_not_supported(err.value, "events.0.type")
    assert mention in err.value.message
    assert [e async for e in client.beta.sessions.events.list(session.id)] == []

    if event["type"] == "user.define_outcome":  # also refused as an initial event
        with pytest.raises(anthropic.BadRequestError) as err:
            await client.beta.sessions.create(agent=agent_id, environment_id=env_id, initial_events=[event])  # type: ignore[list-item]
        assert_not_supported(err.value, "initial_events.0.type")


async def test_a_request_for_another_workspace_than_the_keys_is_refused(stack: Stack, bus: Bus) -> None:
    workspace = "wrkspc_" + secrets.token_hex(8)
    key = "sk-corral-test-" + secrets.token_urlsafe(16)
    request = CreateApiKey(workspace_id=workspace, key_sha256=hashlib.sha256(key.encode()).hexdigest(), name="t")
    reply = RpcReply.model_validate_json(
        await bus.request(subjects.store_rpc(Op.API_KEYS_CREATE), request.model_dump_json().encode())
    )
    assert reply.ok, reply
    async with anthropic.AsyncAnthropic(base_url=stack.gateway_url, api_key=key, max_retries=0) as sdk:
        name = unique("ws")
        with pytest.raises(anthropic.PermissionDeniedError) as err:
            await sdk.beta.agents.create(name=name, model="claude-sonnet-4-6", workspace_id="wrkspc_someone_else")
        assert err.value.status_code == 403
        assert "wrkspc_someone_else" in err.value.message and workspace in err.value.message
        with pytest.raises(anthropic.PermissionDeniedError):
            await sdk.beta.agents.list(workspace_id="wrkspc_someone_else")
        assert name not in {a.name async for a in sdk.beta.agents.list()}
        # naming its own workspace is fine
        agent = await sdk.beta.agents.create(name=name, model="claude-sonnet-4-6", workspace_id=workspace)
        assert (await sdk.beta.agents.retrieve(agent.id, workspace_id=workspace)).name == name
