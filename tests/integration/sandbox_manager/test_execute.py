"""``execute`` over the bus: the toolset in a real sandbox, once per key, and what happens when a
sandbox dies mid-call (reliability plan F7)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from corral.contracts.rpc import RpcReply
from corral.contracts.sandbox import Cancel, Cancelled, Release, Released, SandboxOp
from tests.integration.sandbox_manager.conftest import Manager, containers_of, eventually

pytestmark = pytest.mark.integration


def session() -> str:
    return f"sesn_{uuid.uuid4().hex}"


async def test_the_toolset_works_in_the_sandbox_with_a_persistent_shell(manager: Manager) -> None:
    sid = session()
    wrote = await manager.execute(sid, "write", {"file_path": "app/hello.py", "content": "print('hello')\n"})
    assert not wrote.is_error and wrote.executed
    assert await manager.bash(sid, "cd app && export GREETING=hi && python3 hello.py") == "hello\n"
    assert await manager.bash(sid, "pwd; echo $GREETING") == "/workspace/app\nhi\n"
    edited = await manager.execute(
        sid, "edit", {"file_path": "/workspace/app/hello.py", "old_string": "hello", "new_string": "bye"}
    )
    assert not edited.is_error
    assert await manager.bash(sid, "python3 hello.py") == "bye\n"
    read = await manager.execute(sid, "read", {"file_path": "app/hello.py"})
    assert read.content[-1].text == "     1\tprint('bye')"
    found = await manager.execute(sid, "glob", {"pattern": "**/*.py"})
    assert found.content[-1].text == "/workspace/app/hello.py"
    grep = await manager.execute(sid, "grep", {"pattern": "pri?nt", "path": "app"})
    assert grep.content[-1].text == "/workspace/app/hello.py:1:print('bye')"
    restarted = await manager.execute(sid, "bash", {"restart": True})
    assert not restarted.is_error
    assert await manager.bash(sid, 'pwd; echo "[$GREETING]"') == "/workspace\n[]\n"


async def test_sessions_do_not_share_a_sandbox(manager: Manager) -> None:
    one, two = session(), session()
    await manager.bash(one, "echo secret > /workspace/mine.txt")
    other = await manager.execute(two, "read", {"file_path": "mine.txt"})
    assert other.is_error and "does not exist" in other.content[-1].text
    assert (await manager.provision(one)).container_id != (await manager.provision(two)).container_id


async def test_the_same_tool_use_id_runs_once(manager: Manager) -> None:
    sid, key = session(), f"toolu_{uuid.uuid4().hex}"
    command = "echo run >> /workspace/runs.log; wc -l < /workspace/runs.log"
    first = await manager.execute(sid, "bash", {"command": command}, tool_use_id=key)
    second = await manager.execute(sid, "bash", {"command": command}, tool_use_id=key)
    assert (first.executed, second.executed) == (True, False)
    assert first.content == second.content and first.content[-1].text == "1\n"
    # concurrent duplicates join the one run
    other = f"toolu_{uuid.uuid4().hex}"
    results = await asyncio.gather(
        *(manager.execute(sid, "bash", {"command": command}, tool_use_id=other) for _ in range(3))
    )
    assert sorted(r.executed for r in results) == [False, False, True]
    assert {r.content[-1].text for r in results} == {"2\n"}
    assert await manager.bash(sid, "wc -l < /workspace/runs.log") == "2\n"


async def test_killing_the_container_mid_bash_gives_one_error_then_a_fresh_sandbox(manager: Manager) -> None:
    sid, key = session(), f"toolu_{uuid.uuid4().hex}"
    await manager.bash(sid, "echo precious > /workspace/file.txt")
    before = (await manager.provision(sid)).container_id
    running = asyncio.ensure_future(manager.execute(sid, "bash", {"command": "sleep 30"}, tool_use_id=key))
    container = manager.engine.client.containers.get(before)

    async def sleeping() -> bool:
        return any("sleep 30" in " ".join(p) for p in (await asyncio.to_thread(container.top))["Processes"])

    await eventually(sleeping, timeout=10)
    await asyncio.to_thread(container.kill)
    async with asyncio.timeout(10):
        lost = await running
    assert lost.is_error and lost.executed
    assert lost.content[-1].text == (
        "the sandbox stopped while running this tool; a new sandbox will be used for the next call; "
        "files in /workspace were lost"
    )
    again = await manager.execute(sid, "bash", {"command": "sleep 30"}, tool_use_id=key)
    assert again == lost.model_copy(update={"executed": False})  # recorded once, never re-run
    assert await manager.bash(sid, "cat /workspace/file.txt 2>&1 || true") == (
        "cat: /workspace/file.txt: No such file or directory\n"
    )
    after = (await manager.provision(sid)).container_id
    assert after != before

    async def removed() -> bool:
        return before not in containers_of(manager.engine)

    await eventually(removed, timeout=10)


async def test_a_running_command_can_be_cancelled(manager: Manager) -> None:
    sid, key = session(), f"toolu_{uuid.uuid4().hex}"
    await manager.bash(sid, "cd /tmp")
    running = asyncio.ensure_future(manager.execute(sid, "bash", {"command": "sleep 30"}, tool_use_id=key))
    async with asyncio.timeout(10):
        while True:
            reply = RpcReply.model_validate_json(
                await manager.bus.request(
                    "corral.rpc.sandbox." + SandboxOp.CANCEL,
                    Cancel(session_id=sid, tool_use_id=key).model_dump_json().encode(),
                )
            )
            if Cancelled.model_validate(reply.result).cancelled:
                break
            await asyncio.sleep(0.02)
    async with asyncio.timeout(5):
        outcome = await running
    assert outcome.is_error and "cancelled" in outcome.content[-1].text
    assert await manager.bash(sid, "pwd") == "/tmp\n"  # the shell came back where it was


async def test_bash_honours_timeout_ms_and_output_is_capped(manager: Manager) -> None:
    sid = session()
    slow = await manager.execute(sid, "bash", {"command": "echo started; sleep 10", "timeout_ms": 500})
    assert slow.is_error
    assert slow.content[-1].text.startswith("started\n[timed out after 0.5 s")
    limit = manager.settings.sandbox.output_limit
    last = limit // 4  # seq prints more than 4 bytes a number: over the limit
    flood = await manager.execute(sid, "bash", {"command": f"seq 1 {last}"})
    text = flood.content[-1].text
    assert not flood.is_error
    assert limit - 100 < len(text.encode()) < limit + 200 and "[output truncated:" in text
    assert text.startswith("1\n2\n3\n") and text.endswith(f"{last - 1}\n{last}\n")


async def test_web_tools_and_unknown_tools_are_errors_the_model_can_read(manager: Manager) -> None:
    sid = session()
    fetch = await manager.execute(sid, "web_fetch", {"url": "https://example.com"})
    assert fetch.is_error and "web_fetch is not available in this deployment" in fetch.content[-1].text
    search = await manager.execute(sid, "web_search", {"query": "x"})
    assert search.is_error and "not available" in search.content[-1].text
    unknown = await manager.execute(sid, "telnet", {})
    assert unknown.is_error and "unknown tool 'telnet'" in unknown.content[-1].text
    bad = await manager.execute(sid, "read", {"file_path": 42})
    assert bad.is_error and bad.content[-1].text == "file_path must be a non-empty string"


async def test_release_removes_the_sessions_container(manager: Manager) -> None:
    sid = session()
    container_id = (await manager.provision(sid)).container_id
    reply = RpcReply.model_validate_json(
        await manager.bus.request(
            "corral.rpc.sandbox." + SandboxOp.RELEASE,
            Release(session_id=sid, reason="session archived").model_dump_json().encode(),
        )
    )
    assert Released.model_validate(reply.result).container_id == container_id
    assert container_id not in containers_of(manager.engine)


async def test_invalid_ids_are_refused_before_anything_runs(manager: Manager) -> None:
    reply = await manager.rpc(
        SandboxOp.EXECUTE,
        {"session_id": "sesn.bad>", "tool_use_id": "t", "name": "bash", "input": {}, "environment_id": "e"},
    )
    assert not reply.ok and reply.error is not None and reply.error.type == "invalid_request_error"
