"""Health, the ``/_corral`` control endpoints, error bodies, auth and shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anthropic
import httpx
import pytest
from anthropic.types import MessageParam, TextBlock, ToolResultBlockParam, ToolUseBlock

if TYPE_CHECKING:
    from tests.integration.embedded_model.conftest import EmbeddedModelServer

MODEL = "corral-test-model"


def one_turn(name: str, match: str, text: str) -> dict[str, Any]:
    turn = {"content": [{"type": "text", "text": text}]}
    return {"scenarios": [{"name": name, "match": match, "turns": [turn]}]}


async def reply_text(client: anthropic.AsyncAnthropic, prompt: str) -> str:
    message = await client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": prompt}])
    return "".join(block.text for block in message.content if isinstance(block, TextBlock))


async def test_health_reports_ok(embedded_model: EmbeddedModelServer) -> None:
    async with httpx.AsyncClient(base_url=embedded_model.base_url) as http:
        response = await http.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_installed_scenarios_are_listed_and_answer(
    client: anthropic.AsyncAnthropic, embedded_model: EmbeddedModelServer
) -> None:
    response = await embedded_model.install(one_turn("greeter", "^greet me$", "Greetings."))

    assert response.status_code == 200
    assert response.json()["installed"] == ["greeter"]
    assert response.json()["scenarios"][0] == "greeter"
    assert "from-file" in response.json()["scenarios"]
    assert await reply_text(client, "greet me") == "Greetings."


async def test_installing_a_scenario_with_a_taken_name_replaces_it(
    client: anthropic.AsyncAnthropic, embedded_model: EmbeddedModelServer
) -> None:
    await embedded_model.install(one_turn("replaceable", "^replace me$", "old"))
    response = await embedded_model.install(one_turn("replaceable", "^replace me$", "new"))

    assert response.json()["scenarios"].count("replaceable") == 1
    assert await reply_text(client, "replace me") == "new"


async def test_runtime_scenarios_take_precedence_over_the_startup_file(
    client: anthropic.AsyncAnthropic, embedded_model: EmbeddedModelServer
) -> None:
    await embedded_model.install(one_turn("override-file", "^file scenario override", "runtime"))

    assert await reply_text(client, "file scenario override") == "runtime"
    assert await reply_text(client, "file scenario plain") == "Scripted from the startup file."


async def test_deleting_scripts_clears_runtime_scenarios(
    client: anthropic.AsyncAnthropic, embedded_model: EmbeddedModelServer
) -> None:
    await embedded_model.install(one_turn("temporary", "^temporary$", "scripted"))
    assert await reply_text(client, "temporary") == "scripted"

    async with httpx.AsyncClient(base_url=embedded_model.base_url) as http:
        response = await http.delete("/_corral/scripts")

    assert response.status_code == 200
    assert "temporary" in response.json()["removed"]
    assert response.json()["scenarios"] == ["from-file"]
    assert await reply_text(client, "temporary") == ('Hello from Corral\'s embedded model. You said: "temporary"')


@pytest.mark.parametrize(
    ("turn", "field"),
    [
        (
            {"content": [{"type": "tool_use", "input": {}}]},
            "scenarios.0.turns.0.content.0.tool_use.name",
        ),
        ({"content": [{"type": "video"}]}, "scenarios.0.turns.0.content.0"),
        ({"stop_reason": "bored"}, "scenarios.0.turns.0.stop_reason"),
        ({"error": {"status": 200}}, "scenarios.0.turns.0.error.status"),
        ({"chunk_delay_ms": -1}, "scenarios.0.turns.0.chunk_delay_ms"),
        ({"surprise": True}, "scenarios.0.turns.0.surprise"),
    ],
)
async def test_invalid_script_is_rejected_with_400_naming_the_field(
    embedded_model: EmbeddedModelServer, turn: dict[str, Any], field: str
) -> None:
    document = {"scenarios": [{"name": "bad", "match": "x", "turns": [turn]}]}

    response = await embedded_model.install(document)

    assert response.status_code == 400
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert field in response.json()["error"]["message"]


async def test_script_with_a_broken_regex_is_rejected_naming_match(
    embedded_model: EmbeddedModelServer,
) -> None:
    document = {"scenarios": [{"name": "bad", "match": "(", "turns": [{}]}]}

    response = await embedded_model.install(document)

    assert response.status_code == 400
    assert "scenarios.0.match" in response.json()["error"]["message"]


async def test_recorded_requests_show_what_the_caller_sent(
    client: anthropic.AsyncAnthropic, embedded_model: EmbeddedModelServer
) -> None:
    tool_turn = {"content": [{"type": "tool_use", "name": "bash", "input": {"command": "ls"}}]}
    done_turn = {"content": [{"type": "text", "text": "done"}]}
    await embedded_model.install(
        {
            "scenarios": [
                {
                    "name": "recorded",
                    "match": "record me",
                    "turns": [tool_turn, done_turn],
                }
            ]
        }
    )
    messages: list[MessageParam] = [{"role": "user", "content": "record me"}]
    first = await client.messages.create(model=MODEL, max_tokens=10, messages=messages)
    (tool_use,) = [block for block in first.content if isinstance(block, ToolUseBlock)]
    tool_result: ToolResultBlockParam = {
        "type": "tool_result",
        "tool_use_id": tool_use.id,
        "content": [{"type": "text", "text": "a.py\nb.py"}],
        "is_error": False,
    }
    messages += [
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [tool_result]},
    ]
    async with client.messages.stream(model=MODEL, max_tokens=10, messages=messages) as stream:
        await stream.get_final_message()

    recorded = await embedded_model.recorded("recorded")

    assert [(r["scenario"], r["turn_index"], r["stream"]) for r in recorded] == [
        ("recorded", 0, False),
        ("recorded", 1, True),
    ]
    assert recorded[0]["request_id"].startswith("req_")
    assert recorded[1]["body"]["messages"][-1]["content"] == [tool_result]
    assert recorded[1]["body"]["messages"][1]["content"][0]["id"] == tool_use.id


@pytest.mark.parametrize(
    "headers",
    [{"x-api-key": "anything"}, {"authorization": "Bearer anything"}, {}],
    ids=["x-api-key", "bearer", "none"],
)
async def test_any_credentials_or_none_are_accepted(
    embedded_model: EmbeddedModelServer, headers: dict[str, str]
) -> None:
    body = {
        "model": MODEL,
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with httpx.AsyncClient(base_url=embedded_model.base_url) as http:
        response = await http.post("/v1/messages", json=body, headers=headers)

    assert response.status_code == 200
    assert response.json()["type"] == "message"
    assert response.headers["request-id"].startswith("req_")


@pytest.mark.parametrize(
    ("content", "status", "error_type"),
    [
        (b"not json", 400, "invalid_request_error"),
        (
            b'{"model": "m", "max_tokens": 5, "messages": []}',
            400,
            "invalid_request_error",
        ),
        (
            b'{"model": "m", "max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]}',
            400,
            "invalid_request_error",
        ),
    ],
    ids=["not-json", "no-messages", "bad-role"],
)
async def test_nonsense_requests_get_anthropic_error_bodies(
    embedded_model: EmbeddedModelServer, content: bytes, status: int, error_type: str
) -> None:
    async with httpx.AsyncClient(base_url=embedded_model.base_url) as http:
        response = await http.post("/v1/messages", content=content)

    assert response.status_code == status
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == error_type


async def test_unknown_paths_get_a_not_found_error_body(
    embedded_model: EmbeddedModelServer,
) -> None:
    async with httpx.AsyncClient(base_url=embedded_model.base_url) as http:
        response = await http.get("/v1/nothing-here")

    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


async def test_server_exits_cleanly_on_sigterm(
    start_embedded_model: Callable[[], EmbeddedModelServer],
) -> None:
    server = start_embedded_model()

    exit_status = server.stop()

    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert exit_status in (0, -signal.SIGTERM)
    assert "Finished server process" in server.log()
    assert "Traceback" not in server.log()


def test_an_invalid_startup_script_stops_the_server_naming_the_field(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"scenarios": [{"name": "x", "match": "x", "turns": [{"fail_times": 1}]}]}))
    env = {**os.environ, "CORRAL_EMBEDDED_MODEL_SCRIPT": str(script), "CORRAL_EMBEDDED_MODEL_PORT": "0"}

    result = subprocess.run(
        [sys.executable, "-m", "corral.embedded_model"], env=env, capture_output=True, text=True, timeout=15
    )

    assert result.returncode == 2
    assert "scenarios.0.turns.0" in result.stderr
    assert "fail_times is set but error is not" in result.stderr


async def test_a_turn_spelling_out_every_optional_field_is_accepted(embedded_model: EmbeddedModelServer) -> None:
    turn = {
        "content": [
            {"type": "text", "text": "I'll write the file."},
            {"type": "tool_use", "name": "write", "input": {"file_path": "/workspace/a.py", "content": "print(1)"}},
        ],
        "stop_reason": None,
        "usage": {"input_tokens": 10, "output_tokens": 5},
        "first_byte_delay_ms": 0,
        "chunk_delay_ms": 0,
        "error": None,
        "fail_times": 0,
    }

    response = await embedded_model.install(
        {"scenarios": [{"name": "spelled-out", "match": "^spelled", "turns": [turn]}]}
    )

    assert response.status_code == 200, response.text


async def test_deleting_one_scenario_by_name_keeps_the_others(embedded_model: EmbeddedModelServer) -> None:
    await embedded_model.install(one_turn("keep-me", "^keep me$", "kept"))
    await embedded_model.install(one_turn("drop-me", "^drop me$", "dropped"))

    async with httpx.AsyncClient(base_url=embedded_model.base_url) as http:
        deleted = await http.delete("/_corral/scripts", params={"name": "drop-me"})
        listed = await http.get("/_corral/scripts")

    assert deleted.json()["removed"] == ["drop-me"]
    assert "keep-me" in listed.json()["scenarios"]
    assert "drop-me" not in listed.json()["scenarios"]


async def test_clearing_recorded_requests_empties_the_record(
    client: anthropic.AsyncAnthropic, embedded_model: EmbeddedModelServer
) -> None:
    await reply_text(client, "something to record")

    async with httpx.AsyncClient(base_url=embedded_model.base_url) as http:
        cleared = await http.delete("/_corral/requests")
        remaining = await http.get("/_corral/requests")

    assert cleared.json()["cleared"] >= 1
    assert remaining.json() == {"requests": []}
