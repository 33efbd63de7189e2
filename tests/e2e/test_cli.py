"""The ``corral`` console script, run as a user runs it (a subprocess), against the e2e stack: the
README's examples as written, ``apply`` that creates a version only for a changed file, a session
run with a tool call confirmed on stdin, the export of a whole log, and one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import anthropic
import httpx
import pytest

from corral.devstack.stack import Stack
from tests.e2e.flows import all_events, requests_of, script, unique
from tests.mcp_server import free_port

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
CORRAL = Path(sys.executable).parent / "corral"


def corral(
    stack: Stack,
    *args: str,
    cwd: Path,
    stdin: str = "",
    api_key: str | None = None,
    admin_key: str | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``corral`` command with only what a user's shell would give it."""
    env = {"PATH": f"{CORRAL.parent}:/usr/bin:/bin", "HOME": str(cwd), **stack.client_env()}
    if api_key is not None:
        env["ANTHROPIC_API_KEY"] = api_key
    if admin_key is not None:
        env["CORRAL_ADMIN_KEY"] = admin_key
    return subprocess.run(
        [str(CORRAL), *args], cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=timeout
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], says: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert says in lines[0], lines[0]


def readme_examples() -> tuple[dict[str, str], str]:
    """The files and the shell block the README marks as the CLI examples."""
    text = README.read_text()
    files = dict(re.findall(r"<!-- corral-cli-example-file: (\S+) -->\n```yaml\n(.*?)```", text, flags=re.S))
    blocks = re.findall(r"<!-- corral-cli-examples:[^>]*-->\n```bash\n(.*?)```", text, flags=re.S)
    assert files and len(blocks) == 1, "the README lost its marked CLI examples"
    return files, blocks[0]


def test_the_readme_cli_examples_run_as_written(stack: Stack, tmp_path: Path) -> None:
    files, commands = readme_examples()
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    # as after `make up`: the gateway and keys only in .corral/, found from a directory below it
    (tmp_path / ".corral").mkdir()
    (tmp_path / ".corral" / "env").write_text("".join(f"{k}={v}\n" for k, v in stack.client_env().items()))
    (tmp_path / ".corral" / "admin-key").write_text(stack.admin_api_key + "\n")
    env = {"PATH": f"{CORRAL.parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", commands],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = ok(result)
    assert re.search(r"agent reviewer created: agent_\w+ version 1", out), out
    assert re.search(r"agent reviewer unchanged: agent_\w+ version 1", out), out
    assert re.search(r"agent reviewer updated: agent_\w+ version 1 → 2 \(system changed\)", out), out
    assert "-system: Be brief." in out and "+system: Be very brief." in out, out
    exported = [json.loads(line) for line in (tmp_path / "session.jsonl").read_text().splitlines()]
    assert exported[0]["type"] == "user.message" and exported[-1]["type"] == "session.status_idle"
    assert re.search(r"^sk-corral-api-\S+$", out, flags=re.M), out


def test_apply_twice_creates_one_version_and_a_change_creates_the_next(stack: Stack, tmp_path: Path) -> None:
    name = unique("cli-apply")
    agent_file = tmp_path / "agent.yaml"
    agent_file.write_text(f"name: {name}\nmodel: claude-sonnet-4-6\nsystem: |\n  First.\nmetadata: {{team: a}}\n")
    assert re.search(
        rf"agent {name} created: (agent_\w+) version 1",
        ok(corral(stack, "agents", "apply", "-f", "agent.yaml", cwd=tmp_path)),
    )
    assert f"agent {name} unchanged" in ok(corral(stack, "agents", "apply", "-f", "agent.yaml", cwd=tmp_path))
    with anthropic.Anthropic(base_url=stack.gateway_url, api_key=stack.api_key) as sdk:
        [agent] = [a for a in sdk.beta.agents.list(limit=100) if a.name == name]
        assert [v.version for v in sdk.beta.agents.versions.list(agent.id)] == [1]

        agent_file.write_text(agent_file.read_text().replace("First.", "Second."))
        assert "version 1 → 2 (system changed)" in ok(
            corral(stack, "agents", "apply", "-f", "agent.yaml", cwd=tmp_path)
        )
        assert f"agent {name} unchanged" in ok(corral(stack, "agents", "apply", "-f", "agent.yaml", cwd=tmp_path))
        assert sorted(v.version for v in sdk.beta.agents.versions.list(agent.id)) == [1, 2]
        assert sdk.beta.agents.retrieve(agent.id).system == "Second.\n"

    diff = ok(corral(stack, "agents", "diff", name, "--from", "1", "--to", "2", cwd=tmp_path))
    assert " system: |\n-  First.\n+  Second.\n" in diff, diff
    assert "\nversion: 2\n" in ok(corral(stack, "agents", "get", name, cwd=tmp_path))


def steps(stderr: str) -> list[str]:
    """The plain progress lines of a command run without a terminal, their durations left out."""
    return [re.sub(r": done in \d+\.\ds$", "", line) for line in stderr.splitlines() if "done in" in line]


def test_environment_apply_twice_changes_nothing(stack: Stack, tmp_path: Path) -> None:
    name = unique("cli-env")
    (tmp_path / "env.yaml").write_text(f"name: {name}\nconfig:\n  type: cloud\n  networking: {{type: unrestricted}}\n")
    created = corral(stack, "environments", "apply", "-f", "env.yaml", cwd=tmp_path)
    assert f"environment {name} created" in ok(created)
    assert steps(created.stderr) == [f"looking up environment {name}", f"creating environment {name}"]
    assert "note:" not in created.stderr  # no packages, no image to build
    with anthropic.Anthropic(base_url=stack.gateway_url, api_key=stack.api_key) as sdk:
        [env] = [e for e in sdk.beta.environments.list(limit=100) if e.name == name]
        unchanged = corral(stack, "environments", "apply", "-f", "env.yaml", cwd=tmp_path)
        assert f"environment {name} unchanged" in ok(unchanged)
        assert steps(unchanged.stderr) == [f"looking up environment {name}"]
        assert sdk.beta.environments.retrieve(env.id).updated_at == env.updated_at
        (tmp_path / "env.yaml").write_text((tmp_path / "env.yaml").read_text() + "description: builds\n")
        updated = corral(stack, "environments", "apply", "-f", "env.yaml", cwd=tmp_path)
        assert "(description changed)" in ok(updated)
        assert steps(updated.stderr) == [f"looking up environment {name}", f"updating environment {name}"]
        assert sdk.beta.environments.retrieve(env.id).description == "builds"


def test_environment_with_packages_says_when_its_image_is_built(stack: Stack, tmp_path: Path) -> None:
    """The API has no build state to follow: apply says so, and when the build happens, in plain words."""
    name = unique("cli-pkgs")
    (tmp_path / "env.yaml").write_text(f"name: {name}\nconfig:\n  type: cloud\n  packages: {{apt: [jq]}}\n")
    created = corral(stack, "environments", "apply", "-f", "env.yaml", cwd=tmp_path)
    assert f"environment {name} created" in ok(created)
    [note] = [line for line in created.stderr.splitlines() if line.startswith("note:")]
    assert f"environment {name} lists packages (apt: jq): its image is built when a session" in note
    assert "note:" not in corral(stack, "environments", "apply", "-f", "env.yaml", cwd=tmp_path).stderr  # unchanged

    (tmp_path / "env.yaml").write_text(f"name: {name}\nconfig:\n  type: cloud\n  packages: {{apt: [jq, curl]}}\n")
    updated = corral(stack, "environments", "apply", "-f", "env.yaml", cwd=tmp_path)
    assert "(config changed)" in ok(updated)
    assert "lists packages (apt: jq, curl)" in updated.stderr


def test_on_a_terminal_progress_is_a_spinner_unless_no_progress(stack: Stack, tmp_path: Path) -> None:
    name = unique("cli-tty")
    (tmp_path / "env.yaml").write_text(f"name: {name}\n")
    env = {"PATH": f"{CORRAL.parent}:/usr/bin:/bin", "HOME": str(tmp_path), "TERM": "xterm", **stack.client_env()}

    def on_a_terminal(*args: str) -> str:
        command = " ".join([str(CORRAL), "environments", "apply", "-f", "env.yaml", *args])
        result = subprocess.run(
            ["script", "-qec", command, "/dev/null"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout
        return result.stdout

    spun = on_a_terminal()
    assert f"environment {name} created" in spun and "done in" not in spun
    plain = on_a_terminal("--no-progress")
    assert f"looking up environment {name}: done in" in plain and f"environment {name} unchanged" in plain


ASK_BASH = """\
name: {name}
model: claude-sonnet-4-6
tools:
  - type: agent_toolset_20260401
    configs:
      - name: bash
        permission_policy: {{type: always_ask}}
"""


async def test_sessions_run_streams_a_tool_call_confirmed_on_stdin_and_export_writes_every_event(
    stack: Stack, client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, tmp_path: Path
) -> None:
    name = unique("cli-run")
    await script(
        model,
        name,
        [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "name": "bash", "input": {"command": f"echo {name}-ran"}},
        ],
        [{"type": "text", "text": "The command printed its marker."}],
    )
    (tmp_path / "agent.yaml").write_text(ASK_BASH.format(name=name))
    (tmp_path / "env.yaml").write_text(f"name: {name}\n")
    ok(corral(stack, "agents", "apply", "-f", "agent.yaml", cwd=tmp_path))
    ok(corral(stack, "environments", "apply", "-f", "env.yaml", cwd=tmp_path))

    run = corral(
        stack, "sessions", "run", "--agent", name, "-e", name, f"{name}: run the check", cwd=tmp_path, stdin="y\n"
    )
    out = ok(run)
    assert f"allow bash: echo {name}-ran?" in run.stderr
    assert f"→ bash: echo {name}-ran" in out
    assert f"← ok: {name}-ran" in out
    assert "The command printed its marker." in out
    [session_id] = re.findall(r"session (sesn_\w+)", run.stderr)

    bodies = await requests_of(model, name)
    result = bodies[1]["messages"][-1]["content"][-1]
    assert result["type"] == "tool_result" and f"{name}-ran" in json.dumps(result["content"])

    ok(corral(stack, "sessions", "export", session_id, "-o", "log.jsonl", cwd=tmp_path))
    exported = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    logged = await all_events(client, session_id)
    assert [e["id"] for e in exported] == [e.id for e in logged]
    confirmations = [e for e in exported if e["type"] == "user.tool_confirmation"]
    assert [c["result"] for c in confirmations] == ["allow"]

    tail = ok(corral(stack, "sessions", "tail", session_id, cwd=tmp_path))
    assert f"> {name}: run the check" in tail and "The command printed its marker." in tail
    assert session_id in ok(corral(stack, "sessions", "list", "--agent", name, cwd=tmp_path))


async def test_deny_answers_the_confirmation_without_asking(
    stack: Stack, model: httpx.AsyncClient, tmp_path: Path
) -> None:
    name = unique("cli-deny")
    await script(
        model,
        name,
        [{"type": "tool_use", "name": "bash", "input": {"command": "rm -rf /tmp/x"}}],
        [{"type": "text", "text": "Understood."}],
    )
    (tmp_path / "agent.yaml").write_text(ASK_BASH.format(name=name))
    (tmp_path / "env.yaml").write_text(f"name: {name}\n")
    ok(corral(stack, "agents", "apply", "-f", "agent.yaml", cwd=tmp_path))
    ok(corral(stack, "environments", "apply", "-f", "env.yaml", cwd=tmp_path))
    out = ok(corral(stack, "sessions", "run", "--deny", "-a", name, "-e", name, f"{name}: clean up", cwd=tmp_path))
    assert "← error: The user denied this tool call." in out and "Understood." in out
    [result] = [b for b in (await requests_of(model, name))[1]["messages"][-1]["content"] if b["type"] == "tool_result"]
    assert result["is_error"] is True


def test_errors_are_one_line_with_what_to_do(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    one_line_error(corral(stack, "agents", "apply", "-f", "bad.yaml", cwd=tmp_path), "is not valid YAML")
    one_line_error(corral(stack, "agents", "apply", "-f", "missing.yaml", cwd=tmp_path), "cannot read missing.yaml")
    one_line_error(corral(stack, "agents", "get", unique("nobody"), cwd=tmp_path), "no agent named")
    one_line_error(
        corral(stack, "sessions", "run", "-a", unique("nobody"), "hi", cwd=tmp_path), "corral agents apply -f"
    )
    one_line_error(corral(stack, "sessions", "get", "sesn_01NOSUCHSESSION0000000000", cwd=tmp_path), "not found (404)")
    one_line_error(
        corral(stack, "agents", "list", cwd=tmp_path, api_key="sk-corral-wrong"), "API key was refused (401)"
    )
    down = f"http://127.0.0.1:{free_port()}"
    one_line_error(corral(stack, "--base-url", down, "agents", "list", cwd=tmp_path), "cannot reach Corral")
    one_line_error(corral(stack, "--base-url", down, "status", cwd=tmp_path), "cannot reach Corral")


def test_workspaces_and_keys_through_the_admin_api(stack: Stack, tmp_path: Path) -> None:
    """A second workspace's key, made with the CLI, sees none of the first's agents; revoked, it is refused."""
    admin = stack.admin_api_key
    (tmp_path / "agent.yaml").write_text(f"name: {unique('cli-first')}\nmodel: claude-sonnet-4-6\n")
    ok(corral(stack, "agents", "apply", "-f", "agent.yaml", cwd=tmp_path))

    team = unique("team")
    assert re.search(
        rf"workspace {team} created: wrkspc_\w+",
        ok(corral(stack, "workspaces", "create", team, cwd=tmp_path, admin_key=admin)),
    )
    assert team in ok(corral(stack, "workspaces", "list", cwd=tmp_path, admin_key=admin))
    created = corral(
        stack, "keys", "create", "ci", "--workspace", team, "--rps", "5", "--burst", "10", cwd=tmp_path, admin_key=admin
    )
    key = ok(created).strip()
    assert key.startswith("sk-corral-api-") and "shown once" in created.stderr
    [key_id] = re.findall(r"(apikey_\w+)", created.stderr)

    listed = ok(corral(stack, "keys", "list", "--workspace", team, cwd=tmp_path, admin_key=admin))
    assert key_id in listed and "active" in listed and key not in listed
    assert "cli-first" not in ok(corral(stack, "agents", "list", cwd=tmp_path, api_key=key))

    assert f"revoked: {key_id}" in ok(corral(stack, "keys", "revoke", key_id, cwd=tmp_path, admin_key=admin))
    one_line_error(corral(stack, "agents", "list", cwd=tmp_path, api_key=key), "API key was refused (401)")
    # a workspace key is not an admin key
    one_line_error(corral(stack, "keys", "list", cwd=tmp_path), "not allowed (403)")
