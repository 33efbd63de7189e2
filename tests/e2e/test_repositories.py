"""Session repositories end to end: a ``github_repository`` resource cloned from a real git smart-HTTP
server that requires its token (``tests.git_server``: ``git http-backend`` behind Basic auth), the
agent's ``git log`` / commit / ``git push`` in its sandbox through the credential-proxy's git proxy,
a token rotation with ``resources.update``, the ``repository_*_error`` of a refused token, and a
canary sweep: the tokens are nowhere but OpenBao (not in the container's environment, its processes'
environments or command lines, its files or ``.git/config``, the session log, Postgres, the stack's
state directory or any service's log).

The stack here is this module's own: its credential-proxy may reach the test's git server on
127.0.0.1 (``CORRAL_CREDENTIAL_PROXY_GIT_HOSTS`` names it, ``CORRAL_CREDENTIAL_PROXY_GIT_ALLOW_ADDRESSES``
admits loopback for the git proxy alone, never for sandboxes' own egress).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import httpx
import pytest

from corral.devstack.ports import Ports
from corral.devstack.stack import Stack
from tests.e2e.conftest import FAST_RECOVERY, LEASE_TTL_S, _environ
from tests.e2e.flows import all_events, open_stream, read_until_idle, script, send_text, unique
from tests.e2e.sweep import sweep_container, sweep_postgres, sweep_state_dir
from tests.git_server import GitServer, serving

pytestmark = pytest.mark.e2e


def canary() -> str:
    return f"corralcanary-repo-{secrets.token_hex(12)}"


@pytest.fixture(scope="module")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    with serving(tmp_path_factory.mktemp("git")) as server:
        yield server


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, git_server: GitServer) -> Iterator[Stack]:
    proxy = {
        "CORRAL_CREDENTIAL_PROXY_GIT_HOSTS": json.dumps(["github.com", f"127.0.0.1:{git_server.port}"]),
        "CORRAL_CREDENTIAL_PROXY_GIT_ALLOW_ADDRESSES": json.dumps(["127.0.0.1"]),
    }
    stack = Stack(
        tmp_path_factory.mktemp("corral-repos"),
        Ports.free(),
        environ=_environ(),
        docker=True,
        service_env={
            "harness": FAST_RECOVERY,
            "session-store": {"CORRAL_HARNESS_LEASE_TTL_S": LEASE_TTL_S},
            "credential-proxy": proxy,
        },
        log_level="DEBUG",
    )
    stack.start(timeout=900)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
async def client(stack: Stack) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=stack.gateway_url, api_key=stack.api_key, max_retries=0, timeout=60
    ) as sdk:
        yield sdk


async def script_bash(model: httpx.AsyncClient, *commands: str) -> str:
    """A scenario whose turns each run one of ``commands`` with ``bash`` then say "Done."; its name
    (send it as the session's first message)."""
    name = unique("repo")
    turns: list[list[dict[str, Any]]] = []
    for command in commands:
        turns.append([{"type": "tool_use", "name": "bash", "input": {"command": command, "timeout_ms": 120000}}])
        turns.append([{"type": "text", "text": "Done."}])
    await script(model, name, *turns)
    return name


async def bash_turn(client: anthropic.AsyncAnthropic, session_id: str, text: str) -> tuple[list[Any], str]:
    """One turn (the next scripted command runs): the stream's events and the tool's output."""
    stream = await open_stream(client, session_id)
    async with stream:
        await send_text(client, session_id, text)
        seen = await read_until_idle(stream, timeout=240)
    results = [e for e in seen if e.type == "agent.tool_result"]
    assert results, f"no tool result in {[e.type for e in seen]}"
    text = "".join(block.text for block in results[-1].content or [] if block.type == "text")
    return seen, text


async def test_repository_is_cloned_pushed_rotated_and_its_token_is_never_in_the_sandbox(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, stack: Stack, git_server: GitServer
) -> None:
    first, second = canary(), canary()
    git_server.create("demo", {"README.md": "hello from upstream\n"})
    git_server.tokens = {first}
    agent = await client.beta.agents.create(
        name="repo", model="claude-sonnet-4-6", tools=[{"type": "agent_toolset_20260401"}]
    )
    env = await client.beta.environments.create(name=unique("repo-env"))
    url = git_server.url("demo")
    session = await client.beta.sessions.create(
        agent=agent.id,
        environment_id=env.id,
        resources=[
            {
                "type": "github_repository",
                "url": url,
                "authorization_token": first,
                "checkout": {"type": "branch", "name": "main"},
            }
        ],
    )
    [resource] = session.resources
    assert resource.type == "github_repository"
    assert resource.url == url and resource.mount_path == "/workspace/demo"
    assert resource.id.startswith("sesrsc_")
    assert first not in session.model_dump_json()
    listed = await client.beta.sessions.resources.list(session.id)
    assert [r.id for r in listed.data] == [resource.id]
    fetched = await client.beta.sessions.resources.retrieve(resource.id, session_id=session.id)
    assert fetched.url == url

    # the agent's git: log, commit, push (through the proxy, which adds the token upstream)
    name = await script_bash(
        model,
        "cd /workspace/demo && git log --format=%s && echo 'from the agent' >> README.md && "
        "git -c user.name=agent -c user.email=agent@example.com commit -qam 'agent change' && "
        "git push origin HEAD:main 2>&1 && echo PUSHED && git remote get-url origin && hostname",
        "cd /workspace/demo && git fetch origin 2>&1 && echo FETCHED",
    )
    _, out = await bash_turn(client, session.id, name)
    assert "seed" in out and "PUSHED" in out, out
    assert "http://git.corral.invalid/" + resource.id in out, out
    assert git_server.log("demo")[0] == "agent change", "the push landed upstream"
    assert ("POST", "/demo.git/git-receive-pack", "ok") in git_server.seen
    container_short_id = out.strip().splitlines()[-1]

    # rotation: the host now takes only the second token; the sandbox's next fetch uses it
    git_server.tokens = {second}
    updated = await client.beta.sessions.resources.update(
        resource.id, session_id=session.id, authorization_token=second
    )
    assert updated.id == resource.id and second not in updated.model_dump_json()
    assert updated.updated_at > resource.updated_at and updated.created_at == resource.created_at
    again = await client.beta.sessions.retrieve(session.id)
    assert again.resources[0].updated_at == updated.updated_at, "the rotation is recorded"
    mark = len(git_server.seen)
    _, out = await bash_turn(client, session.id, "fetch again")
    assert "FETCHED" in out, out
    after = git_server.seen[mark:]
    assert after and all(verdict == "ok" for _, _, verdict in after), after
    async with httpx.AsyncClient() as direct:
        refused = await direct.get(f"{url}/info/refs?service=git-upload-pack", auth=("x", first))
    assert refused.status_code == 401, "the old token is refused upstream"

    # canary sweep, inside the sandbox: its environment, every process's environ and cmdline, its files
    await sweep_container(stack, container_short_id, (first, second))
    # ... and outside it: the session log, Postgres, the stack's whole state directory and logs
    events = [e.model_dump_json() for e in await all_events(client, session.id)]
    for token in (first, second):
        assert not any(token in e for e in events), "a token is in the session log"
    await sweep_postgres(stack, (first, second))
    sweep_state_dir(stack, (first, second))


async def test_a_refused_token_is_a_repository_authentication_error_and_the_session_goes_on(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, stack: Stack, git_server: GitServer
) -> None:
    git_server.create("private", {"README.md": "secret\n"})
    git_server.tokens = {canary()}
    agent = await client.beta.agents.create(
        name="repo", model="claude-sonnet-4-6", tools=[{"type": "agent_toolset_20260401"}]
    )
    env = await client.beta.environments.create(name=unique("repo-env"))
    url = git_server.url("private")
    session = await client.beta.sessions.create(
        agent=agent.id,
        environment_id=env.id,
        resources=[{"type": "github_repository", "url": url, "authorization_token": canary()}],
    )
    seen, out = await bash_turn(client, session.id, await script_bash(model, "ls /workspace; echo LISTED"))
    assert "LISTED" in out
    errors = [e for e in seen if e.type == "session.error"]
    assert [e.error.type for e in errors] == ["repository_authentication_error"], [e.type for e in seen]
    assert errors[0].error.repository_url == url
    assert errors[0].error.retry_status.type == "retrying"
    assert "private" not in out.split("LISTED")[0], "nothing was cloned"


async def test_bad_repository_input_is_refused_clearly(
    client: anthropic.AsyncAnthropic, http: httpx.AsyncClient, git_server: GitServer
) -> None:
    agent = await client.beta.agents.create(
        name="repo", model="claude-sonnet-4-6", tools=[{"type": "agent_toolset_20260401"}]
    )
    env = await client.beta.environments.create(name=unique("repo-env"))
    body: dict[str, Any] = {"agent": agent.id, "environment_id": env.id}
    cases = [
        ({"type": "github_repository", "url": "https://evil.example.com/o/r"}, "repository_host_not_allowed"),
        ({"type": "github_repository", "url": "ftp://github.com/o/r"}, None),
        ({"type": "github_repository", "url": "https://github.com/o/r", "mount_path": "/etc/x"}, None),
        ({"type": "github_repository", "url": "https://github.com/o/r", "authorization_token": ""}, None),
        ({"type": "file", "file_id": "file_1"}, "feature_not_supported"),
    ]
    for resource, code in cases:
        answer = await http.post("/v1/sessions", json={**body, "resources": [resource]})
        assert answer.status_code == 400, (resource, answer.text)
        error = answer.json()["error"]
        assert error["message"].startswith("resources.0."), error
        if code is not None:
            assert (error.get("details") or {}).get("error_code") == code, answer.text


async def test_a_repository_url_is_useless_outside_its_sessions_sandbox_and_a_missing_branch_is_a_checkout_error(
    client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, git_server: GitServer
) -> None:
    git_server.create("owned", {"README.md": "owned\n"})
    token = canary()
    git_server.tokens = {token}
    agent = await client.beta.agents.create(
        name="repo", model="claude-sonnet-4-6", tools=[{"type": "agent_toolset_20260401"}]
    )
    env = await client.beta.environments.create(name=unique("repo-env"))
    owner = await client.beta.sessions.create(
        agent=agent.id,
        environment_id=env.id,
        resources=[
            {
                "type": "github_repository",
                "url": git_server.url("owned"),
                "authorization_token": token,
                "checkout": {"type": "branch", "name": "no-such-branch"},
            }
        ],
    )
    [resource] = owner.resources
    seen, _ = await bash_turn(client, owner.id, await script_bash(model, "ls /workspace"))
    errors = [e.error for e in seen if e.type == "session.error"]
    assert [e.type for e in errors] == ["repository_checkout_error"], errors
    assert "no-such-branch" in errors[0].message

    # another session's sandbox sends the owner's capability URL through its own proxy: refused there
    other = await client.beta.sessions.create(agent=agent.id, environment_id=env.id)
    mark = len(git_server.seen)
    _, out = await bash_turn(
        client,
        other.id,
        await script_bash(
            model,
            "git -c http.proxy=http://127.0.0.1:3128 ls-remote "
            f"http://git.corral.invalid/{resource.id} 2>&1; echo EXIT=$?",
        ),
    )
    assert "EXIT=0" not in out, out
    # git shows the proxy's plain-text answer as the remote's message
    assert f"{resource.id} is not a repository of this session" in out, out
    assert git_server.seen[mark:] == [], "nothing reached the repository's host"
