"""The driver running the tool loop against fakes: a scripted model, a sandbox that records its
calls (and answers a repeated ``(session_id, tool_use_id)`` from its record), and a store that
enforces the session-store's rules."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral.bus import NoResponders
from corral.contracts.egress import CredentialHostFailure
from corral.harness import crashpoints
from corral.harness.crashpoints import Crashpoint, no_crash
from corral.harness.credentialhosts import CredentialHosts
from corral.harness.retry import RetryPolicy
from corral.harness.sandbox import SandboxError
from corral.harness.tools import BUILTIN_DEFINITIONS
from corral.harness.turn import Outcome, SessionDriver
from tests.unit.harness.fakes import (
    SESSION_ID,
    FakeDeltas,
    FakeModel,
    FakeSandbox,
    FakeStore,
    RecordingSleep,
    Reply,
    StoreLog,
    agent_snapshot,
    calls,
    custom_tool,
    held_lease,
    outcome,
    text,
    toolset,
    user,
)


class Crash(Exception):
    """Stands in for the process dying at a crash-point."""


def crash_at(name: str, *, hit: int = 1) -> Crashpoint:
    """Crash the ``hit``-th time the turn reaches ``name``."""
    seen = 0

    def crashpoint(reached: str) -> None:
        nonlocal seen
        if reached == name:
            seen += 1
            if seen == hit:
                raise Crash(name)

    return crashpoint


def driver(
    store: FakeStore,
    model: FakeModel,
    sandbox: FakeSandbox | None = None,
    *,
    crashpoint: Crashpoint = no_crash,
    max_tool_uses: int | None = None,
    credential_hosts: CredentialHosts | None = None,
) -> SessionDriver:
    return SessionDriver(
        store=store,
        log=StoreLog(store),
        environments=store,
        snapshots=store,
        model=model,
        deltas=FakeDeltas(),
        sandbox=sandbox,
        policy=RetryPolicy(max_retries=1, backoff_s=1.0, max_backoff_s=30.0),
        max_tokens=256,
        sleep=RecordingSleep(),
        crashpoint=crashpoint,
        max_tool_uses=max_tool_uses,
        credential_hosts=credential_hosts,
    )


def tools_store(*tools: dict[str, Any], first: str = "build it") -> FakeStore:
    store = FakeStore(agent=agent_snapshot(tools=list(tools) or [toolset()]))
    store.add(user(first))
    return store


def append_types(store: FakeStore) -> list[list[str]]:
    return [[e["type"] for e in batch] for batch in store.appends]


def tool_uses(store: FakeStore) -> list[dict[str, Any]]:
    return store.of_type("agent.tool_use")


def results(store: FakeStore) -> list[dict[str, Any]]:
    return store.of_type("agent.tool_result")


def result_blocks(request_messages: list[Any]) -> list[dict[str, Any]]:
    """The tool_result blocks of the last user turn of a request."""
    last = request_messages[-1]
    assert last["role"] == "user"
    return [b for b in last["content"] if b["type"] == "tool_result"]


async def run(d: SessionDriver, *, timeout: float = 5.0) -> Outcome:
    async with asyncio.timeout(timeout):
        return await d.run(SESSION_ID, held_lease())


WRITE = ("write", {"file_path": "hello.py", "content": "print('hi')\n"})
RUN_IT = ("bash", {"command": "python hello.py"})
READ = ("read", {"file_path": "hello.py"})
EDIT = ("edit", {"file_path": "hello.py", "old_string": "hi", "new_string": "hello"})


async def test_a_turn_that_reaches_the_tool_call_limit_ends_with_an_error_the_client_can_act_on() -> None:
    store = tools_store()
    model = FakeModel(calls(RUN_IT, RUN_IT), calls(READ), Reply(["never asked"]))
    sandbox = FakeSandbox(lambda request: f"{request.name} done")

    assert await run(driver(store, model, sandbox, max_tool_uses=3)) is Outcome.DONE

    assert len(results(store)) == 3  # the calls the model made all ran
    assert len(model.requests) == 2
    assert append_types(store)[-1] == ["session.error", "session.status_idle"]
    [error] = store.of_type("session.error")
    assert error["error"]["type"] == "tool_use_limit_reached_error"
    assert error["error"]["retry_status"] == {"type": "exhausted"}
    assert "3 tool calls" in error["error"]["message"] and "Send a message" in error["error"]["message"]
    assert store.of_type("session.status_idle")[-1]["stop_reason"] == {"type": "retries_exhausted"}

    store.add(user("keep going"))
    assert await run(driver(store, model, sandbox, max_tool_uses=3)) is Outcome.DONE
    assert len(model.requests) == 3
    assert store.of_type("agent.message")[-1]["content"] == text("never asked")


async def test_write_run_read_edit_run_then_end_turn_logs_each_call_with_its_result_once() -> None:
    store = tools_store()
    model = FakeModel(
        calls(WRITE, say="Writing it."),
        calls(RUN_IT),
        calls(READ),
        calls(EDIT),
        calls(RUN_IT),
        Reply(["It prints hello."]),
    )
    sandbox = FakeSandbox(lambda request: f"{request.name} done")

    assert await run(driver(store, model, sandbox)) is Outcome.DONE

    one_call = ["agent.tool_use", "span.model_request_end"]
    assert append_types(store) == [
        ["session.status_running", "span.model_request_start"],
        ["agent.message", *one_call],
        ["agent.tool_result"],
        *[["span.model_request_start"], one_call, ["agent.tool_result"]] * 4,
        ["span.model_request_start"],
        ["agent.message", "span.model_request_end", "session.status_idle"],
    ]
    uses = tool_uses(store)
    assert [(u["name"], u["input"]) for u in uses] == [WRITE, RUN_IT, READ, EDIT, RUN_IT]
    assert all(u["evaluated_permission"] == "allow" and u["evaluation"] == {"type": "always_allow"} for u in uses)
    assert [r["tool_use_id"] for r in results(store)] == [u["id"] for u in uses]
    assert all(
        r["content"] == text(f"{u['name']} done") and r["is_error"] is False
        for r, u in zip(results(store), uses, strict=True)
    )
    assert [(e.tool_use_id, e.name, e.input) for e in sandbox.executes] == [
        (u["id"], u["name"], u["input"]) for u in uses
    ]
    assert all(u["id"].startswith("sevt_") for u in uses)
    assert store.appends[-1][-1]["stop_reason"] == {"type": "end_turn"}
    # each request after a tool call ends with exactly that call's result, keyed by the event id
    for request, use in zip(model.requests[1:], uses, strict=True):
        assert result_blocks(request.messages) == [
            {"type": "tool_result", "tool_use_id": use["id"], "content": text(f"{use['name']} done")}
        ]
        assert request.messages[-2]["content"][-1] == {
            "type": "tool_use",
            "id": use["id"],
            "name": use["name"],
            "input": use["input"],
        }


async def test_the_model_is_offered_the_enabled_tools() -> None:
    store = tools_store(toolset(bash={"enabled": False}), custom_tool("lookup"))
    model = FakeModel(Reply(["hi"]))

    await run(driver(store, model, FakeSandbox()))

    offered = model.requests[0].tools
    assert [t["name"] for t in offered] == [
        "edit",
        "read",
        "write",
        "glob",
        "grep",
        "web_fetch",
        "web_search",
        "lookup",
    ]
    assert offered[0] == {"name": "edit", **BUILTIN_DEFINITIONS["edit"]}


async def test_parallel_calls_run_in_order_and_their_results_go_back_in_one_user_turn() -> None:
    store = tools_store()
    model = FakeModel(calls(("bash", {"command": "one"}), ("glob", {"pattern": "*"}), RUN_IT), Reply(["ok"]))
    sandbox = FakeSandbox(lambda request: str(request.input))

    await run(driver(store, model, sandbox))

    ids = [u["id"] for u in tool_uses(store)]
    assert [e.tool_use_id for e in sandbox.executes] == ids
    assert append_types(store)[1] == ["agent.tool_use"] * 3 + ["span.model_request_end"]
    assert [b["tool_use_id"] for b in result_blocks(model.requests[1].messages)] == ids
    assert len(model.requests[1].messages) == 3


async def test_an_execute_carries_the_environment_and_waits_as_long_as_the_tool_may_take() -> None:
    store = tools_store()
    model = FakeModel(calls(("bash", {"command": "sleep 1", "timeout_ms": 5000}), READ), Reply(["ok"]))
    sandbox = FakeSandbox()

    await run(driver(store, model, sandbox))

    bash_call, _read_call = sandbox.executes
    assert (bash_call.session_id, bash_call.environment_id) == (SESSION_ID, "env_test")
    assert bash_call.environment_config == {"type": "cloud"}
    assert sandbox.timeouts == [5.0 + 30.0, 600.0 + 30.0]


async def test_provisioning_starts_with_the_turn_and_the_model_never_waits_for_it() -> None:
    store = tools_store()
    model = FakeModel(Reply(["no tools needed"]))
    sandbox = FakeSandbox()
    sandbox.provision_gate = asyncio.Event()  # the container never gets ready

    assert await run(driver(store, model, sandbox)) is Outcome.DONE

    assert len(model.requests) == 1
    [provision] = sandbox.provisions
    assert (provision.session_id, provision.environment_id, provision.environment_config) == (
        SESSION_ID,
        "env_test",
        {"type": "cloud"},
    )


async def test_provisioning_happens_once_per_run_and_a_failure_is_only_logged() -> None:
    store = tools_store()
    sandbox = FakeSandbox()
    sandbox.unavailable = SandboxError("no Docker engine", code="sandbox_unavailable")
    model = FakeModel(calls(RUN_IT), calls(RUN_IT), Reply(["done"]))

    assert await run(driver(store, model, sandbox)) is Outcome.DONE

    assert len(sandbox.provisions) == 1
    assert [r["content"] for r in results(store)] == [text("no Docker engine")] * 2
    assert store.appends[-1][-1]["stop_reason"] == {"type": "end_turn"}


async def test_agents_without_builtin_tools_provision_nothing() -> None:
    store = tools_store(custom_tool())
    sandbox = FakeSandbox()

    await run(driver(store, FakeModel(Reply(["hi"])), sandbox))

    assert sandbox.provisions == []


async def test_an_unavailable_sandbox_becomes_an_error_result_the_model_can_read() -> None:
    store = tools_store()
    sandbox = FakeSandbox()
    sandbox.unavailable = SandboxError("The sandbox is unavailable: the sandbox-manager is not running.")
    model = FakeModel(calls(RUN_IT), Reply(["I could not run it."]))

    assert await run(driver(store, model, sandbox)) is Outcome.DONE

    [result] = results(store)
    assert result["is_error"] is True
    assert result["content"] == text("The sandbox is unavailable: the sandbox-manager is not running.")
    assert result_blocks(model.requests[1].messages)[0]["is_error"] is True


async def test_a_failing_tool_is_passed_on_as_an_error_result() -> None:
    store = tools_store()
    sandbox = FakeSandbox(lambda request: outcome("exit status 1\nTraceback ...", is_error=True))
    model = FakeModel(calls(RUN_IT), Reply(["fixing"]))

    await run(driver(store, model, sandbox))

    [result] = results(store)
    assert (result["content"], result["is_error"]) == (text("exit status 1\nTraceback ..."), True)


async def test_without_an_environment_a_tool_cannot_run_and_says_so() -> None:
    store = FakeStore(agent=agent_snapshot(tools=[toolset()]), environment=None)
    store.add(user("go"))
    sandbox = FakeSandbox()

    await run(driver(store, FakeModel(calls(RUN_IT), Reply(["ok"])), sandbox))

    assert sandbox.executes == [] and sandbox.provisions == []
    assert "environment could not be read" in results(store)[0]["content"][0]["text"]


async def test_an_unknown_or_disabled_tool_is_answered_at_once_with_an_error() -> None:
    store = tools_store(toolset(bash={"enabled": False}))
    model = FakeModel(calls(RUN_IT, ("python", {"code": "1"})), Reply(["ok, no bash"]))
    sandbox = FakeSandbox()

    assert await run(driver(store, model, sandbox)) is Outcome.DONE

    assert append_types(store)[1] == [
        "agent.tool_use",
        "agent.tool_result",
        "agent.tool_use",
        "agent.tool_result",
        "span.model_request_end",
    ]
    bash_use, bash_result, python_use, python_result = store.appends[1][:4]
    assert bash_use["evaluated_permission"] == "deny" and "evaluation" not in bash_use
    assert bash_result["tool_use_id"] == bash_use["id"] and bash_result["is_error"] is True
    assert bash_result["content"][0]["text"].startswith(
        "Tool 'bash' is not enabled for this agent. Tools available: edit"
    )
    assert python_result["content"][0]["text"].startswith("Tool 'python' is not enabled")
    assert sandbox.executes == []
    assert [b["tool_use_id"] for b in result_blocks(model.requests[1].messages)] == [bash_use["id"], python_use["id"]]


async def test_always_ask_idles_with_requires_action_then_an_allow_runs_the_tool() -> None:
    store = tools_store(toolset(bash={"permission_policy": {"type": "always_ask"}}))
    model = FakeModel(calls(READ, RUN_IT), Reply(["ran it"]))
    sandbox = FakeSandbox()

    assert await run(driver(store, model, sandbox)) is Outcome.DONE

    read_use, bash_use = tool_uses(store)
    assert (bash_use["evaluated_permission"], bash_use["evaluation"]) == ("ask", {"type": "always_ask"})
    assert [e.name for e in sandbox.executes] == ["read"]
    assert append_types(store)[-2:] == [["agent.tool_result"], ["session.status_idle"]]
    assert store.appends[-1][-1]["stop_reason"] == {"type": "requires_action", "event_ids": [bash_use["id"]]}
    assert store.session["status"] == "idle"

    store.send({"type": "user.tool_confirmation", "id": "conf", "tool_use_id": bash_use["id"], "result": "allow"})
    assert await run(driver(store, model, sandbox)) is Outcome.DONE

    assert [e.name for e in sandbox.executes] == ["read", "bash"]
    assert append_types(store)[-4:] == [
        ["session.status_running"],
        ["agent.tool_result"],
        ["span.model_request_start"],
        ["agent.message", "span.model_request_end", "session.status_idle"],
    ]
    assert [b["tool_use_id"] for b in result_blocks(model.requests[1].messages)] == [read_use["id"], bash_use["id"]]


async def test_a_denied_call_is_not_run_and_the_model_is_told_why() -> None:
    store = tools_store(toolset(default="always_ask"))
    model = FakeModel(calls(RUN_IT), Reply(["understood"]))
    sandbox = FakeSandbox()
    await run(driver(store, model, sandbox))
    [use] = tool_uses(store)

    store.send(
        {
            "type": "user.tool_confirmation",
            "id": "conf",
            "tool_use_id": use["id"],
            "result": "deny",
            "deny_message": "not on my machine",
        }
    )
    assert await run(driver(store, model, sandbox)) is Outcome.DONE

    assert sandbox.executes == []
    denial = [*text("The user denied this tool call."), *text("not on my machine")]
    [result] = results(store)
    assert (result["tool_use_id"], result["content"], result["is_error"]) == (use["id"], denial, True)
    assert result_blocks(model.requests[1].messages) == [
        {"type": "tool_result", "tool_use_id": use["id"], "content": denial, "is_error": True}
    ]
    assert store.appends[-1][-1]["stop_reason"] == {"type": "end_turn"}


async def test_answering_one_of_two_re_emits_requires_action_with_the_remainder() -> None:
    store = tools_store(toolset(default="always_ask"), custom_tool("lookup"))
    model = FakeModel(calls(RUN_IT, ("lookup", {"q": "x"})), Reply(["thanks"]))
    sandbox = FakeSandbox()
    await run(driver(store, model, sandbox))
    [bash_use] = tool_uses(store)
    [custom] = store.of_type("agent.custom_tool_use")
    assert store.appends[-1][-1]["stop_reason"]["event_ids"] == [bash_use["id"], custom["id"]]

    store.send({"type": "user.tool_confirmation", "id": "c", "tool_use_id": bash_use["id"], "result": "allow"})
    await run(driver(store, model, sandbox))

    assert append_types(store)[-3:] == [["session.status_running"], ["agent.tool_result"], ["session.status_idle"]]
    assert store.appends[-1][-1]["stop_reason"] == {"type": "requires_action", "event_ids": [custom["id"]]}
    assert len(model.requests) == 1

    store.send(
        {"type": "user.custom_tool_result", "id": "r", "custom_tool_use_id": custom["id"], "content": text("42")}
    )
    await run(driver(store, model, sandbox))

    assert len(model.requests) == 2
    assert result_blocks(model.requests[1].messages) == [
        {"type": "tool_result", "tool_use_id": bash_use["id"], "content": text("bash ok")},
        {"type": "tool_result", "tool_use_id": custom["id"], "content": text("42")},
    ]


async def test_a_custom_tool_round_trip() -> None:
    store = tools_store(custom_tool("lookup"))
    model = FakeModel(calls(("lookup", {"q": "weather"}), say="Asking the client."), Reply(["It is sunny."]))
    sandbox = FakeSandbox()

    await run(driver(store, model, sandbox))

    assert append_types(store)[1:] == [
        ["agent.message", "agent.custom_tool_use", "span.model_request_end"],
        ["session.status_idle"],
    ]
    [custom] = store.of_type("agent.custom_tool_use")
    assert (custom["name"], custom["input"]) == ("lookup", {"q": "weather"})
    assert store.appends[-1][-1]["stop_reason"] == {"type": "requires_action", "event_ids": [custom["id"]]}

    with pytest.raises(Exception, match="custom_tool_use_not_pending"):
        store.send({"type": "user.custom_tool_result", "id": "r0", "custom_tool_use_id": "sevt_other"})
    store.send(
        {"type": "user.custom_tool_result", "id": "r", "custom_tool_use_id": custom["id"], "content": text("sunny")}
    )
    await run(driver(store, model, sandbox))

    assert sandbox.executes == [] and sandbox.provisions == []
    assert result_blocks(model.requests[1].messages) == [
        {"type": "tool_result", "tool_use_id": custom["id"], "content": text("sunny")}
    ]
    assert store.types()[-1] == "session.status_idle"
    assert store.appends[-1][-1]["stop_reason"] == {"type": "end_turn"}


async def test_a_crash_after_the_tool_ran_resends_the_same_execute_and_the_tool_runs_once() -> None:
    store = tools_store()
    model = FakeModel(calls(("bash", {"command": "echo x >> log"})), Reply(["done"]))
    sandbox = FakeSandbox()

    with pytest.raises(ExceptionGroup) as crashed:
        await run(driver(store, model, sandbox, crashpoint=crash_at(crashpoints.AFTER_TOOL_EXECUTED)))
    assert crashed.group_contains(Crash)
    assert results(store) == [] and store.session["status"] == "running"

    assert await run(driver(store, model, sandbox)) is Outcome.DONE

    [use] = tool_uses(store)
    assert [e.tool_use_id for e in sandbox.executes] == [use["id"], use["id"]]
    assert len(sandbox.runs) == 1
    assert [r["tool_use_id"] for r in results(store)] == [use["id"]]
    assert "session.status_rescheduled" in store.types()
    assert len(model.requests) == 2


async def test_a_crash_after_the_result_goes_on_with_the_next_model_request() -> None:
    store = tools_store()
    model = FakeModel(calls(RUN_IT), Reply(["done"]))
    sandbox = FakeSandbox()
    crashing = driver(store, model, sandbox, crashpoint=crash_at(crashpoints.AFTER_MODEL_REQUEST_START, hit=2))

    with pytest.raises(ExceptionGroup):
        await run(crashing)
    assert [r["tool_use_id"] for r in results(store)] == [u["id"] for u in tool_uses(store)]
    assert store.types()[-1] == "span.model_request_start"

    assert await run(driver(store, model, sandbox)) is Outcome.DONE

    assert len(sandbox.executes) == len(sandbox.runs) == 1
    assert append_types(store)[-2][:3] == [
        "session.status_rescheduled",
        "session.status_running",
        "span.model_request_end",
    ]
    assert store.appends[-1][-1]["stop_reason"] == {"type": "end_turn"}
    assert result_blocks(model.requests[-1].messages)[0]["tool_use_id"] == tool_uses(store)[0]["id"]


async def test_an_interrupt_cancels_the_running_tool_and_ends_the_turn() -> None:
    store = tools_store()
    model = FakeModel(calls(("bash", {"command": "sleep 30"}), RUN_IT, READ), Reply(["after"]))
    sandbox = FakeSandbox(block="bash")
    running = asyncio.create_task(run(driver(store, model, sandbox)))
    async with asyncio.timeout(5):
        await sandbox.running.wait()

    store.add({"type": "user.interrupt", "id": "int"})

    assert await running is Outcome.DONE
    sleeping, second, reading = tool_uses(store)
    assert [c.tool_use_id for c in sandbox.cancels] == [sleeping["id"]]
    assert [(r["tool_use_id"], r["content"], r["is_error"]) for r in results(store)] == [
        (sleeping["id"], text("interrupted by the user"), True),
        (second["id"], text("not run: the turn was interrupted"), True),
        (reading["id"], text("not run: the turn was interrupted"), True),
    ]
    assert append_types(store)[-2:] == [
        ["agent.tool_result"],
        ["agent.tool_result", "agent.tool_result", "session.status_idle"],
    ]
    assert store.appends[-1][-1]["stop_reason"] == {"type": "end_turn"}
    assert len(sandbox.executes) == 1 and len(model.requests) == 1

    # the session stays usable: the next message starts a normal turn that sees the whole story
    store.add(user("do something else"))
    assert await run(driver(store, model, sandbox)) is Outcome.DONE
    assert store.appends[-1][-1]["stop_reason"] == {"type": "end_turn"}
    last_user = model.requests[1].messages[-1]["content"]
    assert [b["type"] for b in last_user] == ["tool_result", "tool_result", "tool_result", "text"]


async def test_an_interrupt_while_waiting_for_confirmation_closes_the_waiting_calls() -> None:
    store = tools_store(toolset(default="always_ask"))
    model = FakeModel(calls(RUN_IT))
    sandbox = FakeSandbox()
    await run(driver(store, model, sandbox))

    store.add({"type": "user.interrupt", "id": "int"})
    assert await run(driver(store, model, sandbox)) is Outcome.DONE

    assert append_types(store)[-1] == ["session.status_running", "agent.tool_result", "session.status_idle"]
    assert results(store)[0]["content"] == text("not run: the turn was interrupted")
    assert store.appends[-1][-1]["stop_reason"] == {"type": "end_turn"}
    assert sandbox.executes == []


async def test_losing_the_lease_while_a_tool_runs_stops_without_appending() -> None:
    store = tools_store()
    sandbox = FakeSandbox(block="bash")
    lease = held_lease()
    task = asyncio.create_task(driver(store, FakeModel(calls(RUN_IT)), sandbox).run(SESSION_ID, lease))
    async with asyncio.timeout(5):
        await sandbox.running.wait()
    appended = len(store.appends)

    lease.lost.set()
    async with asyncio.timeout(5):
        assert await task is Outcome.LOST
    assert len(store.appends) == appended
    assert results(store) == []


async def test_without_a_sandbox_port_tools_answer_with_an_error() -> None:
    store = tools_store()

    await run(driver(store, FakeModel(calls(RUN_IT), Reply(["ok"]))))

    assert "No sandbox is configured" in results(store)[0]["content"][0]["text"]


def test_an_interrupt_seen_before_a_step_begins_still_stops_that_step() -> None:
    from corral.harness.runstate import TurnState

    turn = TurnState()
    assert not turn.notice(3)  # no step yet
    turn.begin(5)
    assert not turn.interrupted.is_set()
    assert turn.notice(7) and turn.interrupted.is_set()
    turn.begin(7)  # the next step decided on a log that holds that interrupt
    assert not turn.interrupted.is_set()
    turn.notice(9)  # seen while the next step was being decided on a log up to 8
    turn.begin(8)
    assert turn.interrupted.is_set()


class FakeCredentialHosts:
    """The credential-proxy's notes: ``pending`` is handed out (and emptied) on each take."""

    def __init__(self, *pending: CredentialHostFailure, fail: Exception | None = None) -> None:
        self.pending = list(pending)
        self.fail = fail
        self.takes: list[str] = []

    async def take_failures(self, session_id: str) -> list[CredentialHostFailure]:
        self.takes.append(session_id)
        if self.fail is not None:
            raise self.fail
        taken, self.pending = self.pending, []
        return taken


UNREACHABLE = CredentialHostFailure(
    credential_id="vcrd_1",
    vault_id="vlt_1",
    host="api.example.com",
    port=443,
    reason="api.example.com:443 could not be reached: connection refused",
    attempts=2,
)


def vault_store() -> FakeStore:
    store = tools_store()
    store.log[0].event["session"]["vault_ids"] = ["vlt_1"]
    return store


async def test_a_credential_host_the_sandbox_could_not_reach_is_logged_once_and_the_turn_goes_on() -> None:
    store = vault_store()
    hosts = FakeCredentialHosts(UNREACHABLE)
    model = FakeModel(calls(RUN_IT), calls(RUN_IT), Reply(["Done."]))

    assert await run(driver(store, model, FakeSandbox(), credential_hosts=hosts)) is Outcome.DONE

    assert hosts.takes == [SESSION_ID, SESSION_ID]  # after each call that ran in the sandbox
    assert ["session.error", "agent.tool_result"] in append_types(store)
    [error] = store.of_type("session.error")
    assert error["error"]["type"] == "credential_host_unreachable_error"
    assert (error["error"]["credential_id"], error["error"]["vault_id"]) == ("vcrd_1", "vlt_1")
    assert error["error"]["retry_status"] == {"type": "retrying"}
    assert "api.example.com:443" in error["error"]["message"] and "2 attempts" in error["error"]["message"]
    assert store.appends[-1][-1]["stop_reason"] == {"type": "end_turn"}


async def test_a_session_without_vaults_never_asks_and_an_unanswered_ask_logs_nothing() -> None:
    hosts = FakeCredentialHosts(UNREACHABLE)
    store = tools_store()
    assert await run(driver(store, FakeModel(calls(RUN_IT), Reply(["ok"])), FakeSandbox(), credential_hosts=hosts))
    assert hosts.takes == [] and store.of_type("session.error") == []

    down = FakeCredentialHosts(UNREACHABLE, fail=NoResponders("no credential-proxy"))
    store = vault_store()
    model = FakeModel(calls(RUN_IT), Reply(["ok"]))
    assert await run(driver(store, model, FakeSandbox(), credential_hosts=down)) is Outcome.DONE
    assert down.takes == [SESSION_ID] and store.of_type("session.error") == []
    assert len(results(store)) == 1


async def test_a_run_decided_on_a_log_a_late_holder_moved_on_decides_again_and_runs_no_call_twice() -> None:
    """A harness whose lease ran out mid-call still appends the call's result (its lease was read as
    held) just after another harness, taking over, decided on the log without it. The taker's first
    append (its statuses, before any call runs) is fenced on the log its decision saw: refused, it
    catches up and decides again, and the call is answered once."""
    store = tools_store()
    model = FakeModel(calls(RUN_IT), Reply(["done"]))
    sandbox = FakeSandbox()
    with pytest.raises(ExceptionGroup):  # the first holder dies once the call is logged, before it runs
        await run(driver(store, model, sandbox, crashpoint=crash_at(crashpoints.AFTER_TURN_END)))
    [use] = tool_uses(store)
    assert results(store) == [] and store.session["status"] == "running"

    decided_on = store.last_seq
    store.fences.clear()
    reading_environment = store.get

    async def late_holder_lands_after_the_decision(environment_id: str) -> Any:
        # the taker has decided; before its first append (it reads the environment first), the late
        # holder's result is stored and the taker's own read of the log takes it in
        if not results(store):
            late = {"type": "agent.tool_result", "id": "late", "tool_use_id": use["id"], "content": text("ok")}
            store.add({**late, "is_error": False, "processed_at": "2026-01-01T00:00:00.000000Z"})
            async with asyncio.timeout(5):
                await store.followed_through(store.last_seq)
        return await reading_environment(environment_id)

    store.get = late_holder_lands_after_the_decision  # type: ignore[method-assign]
    assert await run(driver(store, model, sandbox)) is Outcome.DONE

    assert [r["id"] for r in results(store)] == ["late"]  # answered once, by the late holder
    assert sandbox.executes == []
    assert store.fences[0] == decided_on  # the taker's first append was fenced, and refused
    assert store.types()[-1] == "session.status_idle"


async def test_a_clients_message_logged_as_an_idle_session_starts_its_turn_does_not_make_it_decide_again() -> None:
    """Only a step that takes a session over from another holder is fenced: a client's burst of
    messages would otherwise keep refusing an idle session's first step. The message logged before
    the model request's start is in that request."""
    store = tools_store(first="one")
    model = FakeModel(Reply(["first"]))
    starting = store.append

    async def client_writes_first(session_id: str, events: Any, **kwargs: Any) -> Any:
        if len(store.of_type("user.message")) == 1:
            store.add(user("two"))
        return await starting(session_id, events, **kwargs)

    store.append = client_writes_first  # type: ignore[method-assign]
    assert await run(driver(store, model)) is Outcome.DONE
    assert store.fences[0] is None
    [request] = model.requests
    assert [b["text"] for b in request.messages[0]["content"]] == ["one", "two"]
    assert store.types()[-1] == "session.status_idle"


async def test_within_a_turn_each_decision_waits_for_its_steps_append_and_only_the_last_looks_the_end_up() -> None:
    """A step's last append was stored at the log's end, so the decision after it waits for that
    record instead of asking NATS for the end again (a round trip per step); the decision after the
    step that ended the turn still asks, so input logged right after the idle is taken by this run."""

    class CountingLookups(FakeStore):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.looked_up_at: list[int] = []  # appends made when each lookup was asked

        async def last_seq_of_log(self, session_id: str) -> int:
            self.looked_up_at.append(len(self.appends))
            return await super().last_seq_of_log(session_id)

    store = CountingLookups(agent=agent_snapshot(tools=[toolset()]))
    store.add(user("build it"))
    model = FakeModel(calls(WRITE), calls(RUN_IT), Reply(["done"]))
    sandbox = FakeSandbox(lambda request: f"{request.name} done")

    assert await run(driver(store, model, sandbox)) is Outcome.DONE

    assert append_types(store)[-1][-1] == "session.status_idle"
    # one as the run starts (beside the snapshot's read, and the first decision waits for it) and one
    # after the idle
    assert store.looked_up_at == [0, len(store.appends)]
