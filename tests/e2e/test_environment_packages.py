"""An environment's ``packages``, end to end: a session's ``bash`` uses what the environment lists,
installed into an environment image that the sandbox-manager built in a container with no network
but its build's egress proxy in the credential-proxy (the package registries only).

The image is removed first, so the build runs every time (about ten seconds near a Debian mirror).
The dev stack passes this host's CA bundle to the sandbox-manager (``CORRAL_SANDBOX_ENVIRONMENT_CA_FILE``),
which is what lets pip verify PyPI where HTTPS goes through an intercepting proxy."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import anthropic
import docker
import httpx
import pytest

from corral.devstack.stack import Stack
from corral.sandbox_manager.executions import NOT_READY
from corral.sandbox_manager.images import environment_image, read_trusted_ca
from corral.sandbox_manager.packages import read_packages
from tests.e2e.flows import all_events, open_stream, read_until_idle, script, send_text, unique

pytestmark = pytest.mark.e2e

CONFIG: dict[str, Any] = {"type": "cloud", "packages": {"type": "packages", "apt": ["jq"], "pip": ["six==1.16.0"]}}
USE_THEM = (
    "jq --version && echo '{\"a\": [1, 2]}' | jq -c .a && python3 -c 'import six; print(\"six\", six.__version__)'"
)
#: Tool calls the scripted model makes; the first ones may come before the image is built.
CALLS = 4
#: How long the turn may take: the build, then the tool calls.
TURN_S = 600.0


def image_tag(stack: Stack) -> str:
    assert stack.sandbox_image is not None
    image = environment_image(stack.sandbox_image, read_packages(CONFIG), read_trusted_ca(stack.environment_ca_file))
    assert image is not None
    return image.tag


def built(stack: Stack, tag: str) -> list[dict[str, Any]]:
    """The sandbox-manager's log records saying it built ``tag``."""
    records = []
    for line in stack.log_path("sandbox-manager").read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("msg") == "environment image built" and record.get("tag") == tag:
                records.append(record)
    return records


@pytest.mark.timeout(TURN_S + 120)
async def test_a_session_uses_the_packages_its_environment_lists(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, stack: Stack
) -> None:
    tag = image_tag(stack)
    assert stack.docker_host is not None
    engine = docker.DockerClient(base_url=stack.docker_host, timeout=60)
    try:
        with contextlib.suppress(docker.errors.ImageNotFound):
            engine.api.remove_image(tag, force=True)
    finally:
        engine.close()

    name = unique("packages")
    call = {"type": "tool_use", "name": "bash", "input": {"command": USE_THEM}}
    # Called again, as a model would be told to while the image is still being built (a loaded
    # machine can need more than one wait for the provision): every call but the last may be told so.
    await script(model, name, *([call] for _ in range(CALLS)), [{"type": "text", "text": "They work."}])
    agent = await client.beta.agents.create(
        name="e2e packages", model="claude-sonnet-4-6", tools=[{"type": "agent_toolset_20260401"}]
    )
    env_body: dict[str, Any] = {"name": unique("e2e-packages"), "config": CONFIG}
    env = await client.beta.environments.create(**env_body)
    session = await client.beta.sessions.create(agent=agent.id, environment_id=env.id)
    stream = await open_stream(client, session.id)
    async with stream:
        await send_text(client, session.id, f"{name}: use jq and six")
        await read_until_idle(stream, timeout=TURN_S)

    results = [e for e in await all_events(client, session.id) if e.type == "agent.tool_result"]
    texts = ["\n".join(block.text for block in r.content if block.type == "text") for r in results]
    assert len(results) == CALLS, texts
    *earlier, last = results
    for result, text in zip(earlier, texts, strict=False):
        assert not result.is_error or NOT_READY in text, text
    assert not last.is_error, texts[-1]
    lines = texts[-1].splitlines()
    assert lines[0].startswith("jq-1.") and lines[1:3] == ["[1,2]", "six 1.16.0"], texts[-1]
    assert len(built(stack, tag)) == 1, f"the sandbox-manager did not log building {tag}"
