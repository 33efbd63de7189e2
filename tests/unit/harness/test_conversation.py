from __future__ import annotations

from typing import Any

import pytest

from corral.harness.conversation import rebuild
from corral.harness.messageblocks import agent_blocks, denial_content, result_blocks, user_blocks
from tests.unit.harness.fakes import (
    agent,
    confirm,
    custom_result,
    custom_use,
    end,
    idle,
    interrupt,
    logged,
    requires_action,
    running,
    start,
    text,
    tool_result,
    tool_use,
    user,
)


def turns(conversation: list[Any]) -> list[tuple[str, list[str]]]:
    return [(m["role"], [b.get("text", b["type"]) for b in m["content"]]) for m in conversation]


def test_plain_turns_alternate_user_and_assistant() -> None:
    log = logged(
        user("hi"), running(), start("s1"), agent("hello"), end("s1"), idle(),
        user("how are you?"), running(), start("s2"), agent("fine"), end("s2"), idle(),
    )  # fmt: skip

    assert turns(rebuild(log)) == [
        ("user", ["hi"]),
        ("assistant", ["hello"]),
        ("user", ["how are you?"]),
        ("assistant", ["fine"]),
    ]


def test_a_user_message_logged_during_a_request_goes_after_that_requests_reply() -> None:
    log = logged(user("first"), running(), start("s1"), user("second"), agent("reply to first"), end("s1"), idle())

    assert turns(rebuild(log)) == [
        ("user", ["first"]),
        ("assistant", ["reply to first"]),
        ("user", ["second"]),
    ]


def test_consecutive_user_messages_merge_into_one_turn() -> None:
    log = logged(user("one"), user("two"), user("three"))

    assert turns(rebuild(log)) == [("user", ["one", "two", "three"])]


def test_a_message_held_back_merges_with_one_sent_after_the_request() -> None:
    log = logged(
        user("first"), start("s1"), user("during"), agent("reply"), end("s1"), idle(), user("after"),
    )  # fmt: skip

    assert turns(rebuild(log)) == [("user", ["first"]), ("assistant", ["reply"]), ("user", ["during", "after"])]


def test_images_and_documents_pass_through_as_messages_api_blocks() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}
    url_image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    document = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "the doc"},
        "title": "Notes",
        "context": None,
    }
    pdf = {"type": "document", "source": {"type": "file", "file_id": "file_1"}}
    log = logged({"type": "user.message", "id": "u", "content": [*text("look"), image, url_image, document, pdf]})

    [message] = rebuild(log)

    assert message["content"] == [
        {"type": "text", "text": "look"},
        image,
        url_image,
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "the doc"},
            "title": "Notes",
        },
        pdf,
    ]


def test_blocks_the_model_cannot_take_are_left_out() -> None:
    content = [
        {"type": "redacted"},
        {"type": "text", "text": "   "},
        {"type": "image", "source": {"type": "base64"}},
        {"type": "mystery"},
        "not a block",
        {"type": "text", "text": "kept"},
    ]

    assert user_blocks(content) == [{"type": "text", "text": "kept"}]
    assert agent_blocks([{"type": "redacted"}, {"type": "text", "text": "said"}]) == [{"type": "text", "text": "said"}]
    assert user_blocks(None) == []


def test_messages_with_nothing_usable_and_unknown_events_are_skipped() -> None:
    log = logged(
        user("hi"),
        {"type": "user.message", "id": "u2", "content": [{"type": "redacted"}]},
        {"type": "session.updated", "id": "x", "title": "t"},
        {"type": "some.future_event", "id": "y"},
        {"type": "agent.message", "id": "a0", "content": []},
    )

    assert turns(rebuild(log)) == [("user", ["hi"])]


def test_a_dangling_start_places_messages_logged_after_it_at_the_end() -> None:
    log = logged(user("first"), running(), start("s1"), user("second"))

    assert turns(rebuild(log)) == [("user", ["first", "second"])]


def test_a_superseded_request_is_replaced_by_the_one_that_closed_it() -> None:
    log = logged(
        user("first"), running(), start("s1"), user("second"),
        end("s1", is_error=True), {"type": "session.status_rescheduled", "id": "r"}, running(),
        start("s2"), user("third"), agent("answer"), end("s2"), idle(),
    )  # fmt: skip

    assert turns(rebuild(log)) == [
        ("user", ["first", "second"]),
        ("assistant", ["answer"]),
        ("user", ["third"]),
    ]


def test_a_start_opened_over_a_dangling_one_releases_the_held_back_messages() -> None:
    log = logged(user("first"), start("s1"), user("second"), start("s2"), agent("answer"), end("s2"))

    assert turns(rebuild(log)) == [("user", ["first", "second"]), ("assistant", ["answer"])]


def test_failed_attempts_leave_the_conversation_unchanged() -> None:
    error = {"type": "session.error", "id": "e", "error": {"type": "model_overloaded_error", "message": "m"}}
    log = logged(
        user("hi"), running(), start("s1"), end("s1", is_error=True), error,
        start("s2"), agent("hello"), end("s2"), idle(),
    )  # fmt: skip

    assert turns(rebuild(log)) == [("user", ["hi"]), ("assistant", ["hello"])]


def test_rebuild_does_not_alias_the_logged_content() -> None:
    log = logged(user("one"), user("two"))

    rebuild(log)[0]["content"].append({"type": "text", "text": "extra"})

    assert turns(rebuild(log)) == [("user", ["one", "two"])]


# --- tool use ---------------------------------------------------------------------------------------


def use_block(id: str, name: str = "bash", input: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "tool_use", "id": id, "name": name, "input": input if input is not None else {"command": "ls"}}


def result_block(id: str, value: str = "ok", *, is_error: bool = False) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": id, "content": text(value)}
    if is_error:
        block["is_error"] = True
    return block


def test_a_tool_use_and_its_result_become_a_tool_use_block_and_a_tool_result_block() -> None:
    log = logged(
        user("list files"), running(), start("s1"), agent("Let me look."), tool_use("sevt_1"), end("s1"),
        tool_result("sevt_1", "a.py"), start("s2"), agent("There is a.py."), end("s2"), idle(),
    )  # fmt: skip

    assert rebuild(log) == [
        {"role": "user", "content": text("list files")},
        {"role": "assistant", "content": [*text("Let me look."), use_block("sevt_1")]},
        {"role": "user", "content": [result_block("sevt_1", "a.py")]},
        {"role": "assistant", "content": text("There is a.py.")},
    ]


def test_parallel_results_go_back_in_one_user_turn_in_tool_use_order() -> None:
    log = logged(
        user("go"), running(), start("s1"),
        tool_use("t1", input={"command": "one"}), tool_use("t2", "read", {"file_path": "x"}), end("s1"),
        tool_result("t2", "second"), tool_result("t1", "first"),
    )  # fmt: skip

    assert rebuild(log) == [
        {"role": "user", "content": text("go")},
        {
            "role": "assistant",
            "content": [use_block("t1", input={"command": "one"}), use_block("t2", "read", {"file_path": "x"})],
        },
        {"role": "user", "content": [result_block("t1", "first"), result_block("t2", "second")]},
    ]


def test_results_come_before_text_the_user_sent_during_the_request_and_during_the_tools() -> None:
    log = logged(
        user("go"), running(), start("s1"), user("during the request"), tool_use("t1"), end("s1"),
        user("while the tool runs"), tool_result("t1", "done"),
    )  # fmt: skip

    assert rebuild(log)[1:] == [
        {"role": "assistant", "content": [use_block("t1")]},
        {
            "role": "user",
            "content": [result_block("t1", "done"), *text("during the request"), *text("while the tool runs")],
        },
    ]


def test_an_error_result_is_marked_as_an_error() -> None:
    log = logged(user("go"), start("s1"), tool_use("t1"), end("s1"), tool_result("t1", "boom", is_error=True))

    assert rebuild(log)[-1] == {"role": "user", "content": [result_block("t1", "boom", is_error=True)]}


def test_a_custom_tool_use_is_answered_by_the_clients_result() -> None:
    log = logged(
        user("go"), running(), start("s1"), custom_use("c1", "lookup", {"q": "x"}), end("s1"),
        requires_action("c1"), custom_result("c1", "42"),
    )  # fmt: skip

    assert rebuild(log)[1:] == [
        {"role": "assistant", "content": [use_block("c1", "lookup", {"q": "x"})]},
        {"role": "user", "content": [result_block("c1", "42")]},
    ]


def test_a_denied_call_tells_the_model_it_was_denied_with_the_users_message() -> None:
    log = logged(
        user("go"), running(), start("s1"), tool_use("t1", permission="ask"), tool_use("t2", permission="ask"),
        end("s1"), requires_action("t1", "t2"),
        confirm("t1", "deny", deny_message="not on prod"), confirm("t2", "deny"),
    )  # fmt: skip

    assert rebuild(log)[-1] == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "t1",
                "content": [*text("The user denied this tool call."), *text("not on prod")],
                "is_error": True,
            },
            {
                "type": "tool_result",
                "tool_use_id": "t2",
                "content": text("The user denied this tool call."),
                "is_error": True,
            },
        ],
    }
    assert denial_content("not on prod") == [*text("The user denied this tool call."), *text("not on prod")]
    assert denial_content("  ") == denial_content(None) == text("The user denied this tool call.")


def test_the_logged_result_of_a_denial_is_used_once() -> None:
    denial = {**tool_result("t1", "The user denied this tool call.", is_error=True), "content": denial_content(None)}
    log = logged(
        user("go"), start("s1"), tool_use("t1", permission="ask"), end("s1"), requires_action("t1"),
        confirm("t1", "deny"), running(), denial,
    )  # fmt: skip

    assert rebuild(log)[-1]["content"] == [
        {"type": "tool_result", "tool_use_id": "t1", "content": denial_content(None), "is_error": True}
    ]


def test_an_allowed_confirmation_adds_nothing_but_the_tools_result() -> None:
    log = logged(
        user("go"), start("s1"), tool_use("t1", permission="ask"), end("s1"), requires_action("t1"),
        confirm("t1", "allow"), running(), tool_result("t1", "ran"),
    )  # fmt: skip

    assert rebuild(log)[-1] == {"role": "user", "content": [result_block("t1", "ran")]}


def test_the_first_result_of_a_tool_use_wins() -> None:
    log = logged(
        user("go"), start("s1"), custom_use("c1"), end("s1"),
        {**tool_result("c1", "not run: the turn was interrupted", is_error=True)}, idle(), custom_result("c1", "late"),
    )  # fmt: skip

    assert rebuild(log)[-1] == {
        "role": "user",
        "content": [result_block("c1", "not run: the turn was interrupted", is_error=True)],
    }


def test_a_tool_use_without_any_result_still_gets_one_so_the_conversation_stays_valid() -> None:
    log = logged(user("go"), start("s1"), tool_use("t1"), end("s1"))

    assert rebuild(log)[-1] == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "t1",
                "content": text("No result was recorded for this tool call."),
                "is_error": True,
            }
        ],
    }


def test_a_tool_loop_alternates_roles_and_keeps_each_result_with_its_use() -> None:
    log = logged(
        user("build it"), running(),
        start("s1"), tool_use("t1", "write", {"file_path": "a.py", "content": "print(1)"}), end("s1"),
        tool_result("t1", "wrote"),
        start("s2"), agent("now run"), tool_use("t2", "bash", {"command": "python a.py"}), end("s2"),
        tool_result("t2", "1"),
        start("s3"), agent("done"), end("s3"), idle(),
        user("thanks"),
    )  # fmt: skip

    conversation = rebuild(log)

    assert [m["role"] for m in conversation] == ["user", "assistant", "user", "assistant", "user", "assistant", "user"]
    assert conversation[2]["content"] == [result_block("t1", "wrote")]
    assert conversation[3]["content"] == [*text("now run"), use_block("t2", "bash", {"command": "python a.py"})]
    assert conversation[4]["content"] == [result_block("t2", "1")]
    assert conversation[6]["content"] == text("thanks")


def test_an_interrupted_turn_keeps_its_error_results() -> None:
    log = logged(
        user("go"), running(), start("s1"), tool_use("t1"), tool_use("t2"), end("s1"), interrupt(),
        tool_result("t1", "interrupted by the user", is_error=True),
        tool_result("t2", "not run: the turn was interrupted", is_error=True), idle(), user("stop, do this instead"),
    )  # fmt: skip

    assert rebuild(log)[-1] == {
        "role": "user",
        "content": [
            result_block("t1", "interrupted by the user", is_error=True),
            result_block("t2", "not run: the turn was interrupted", is_error=True),
            *text("stop, do this instead"),
        ],
    }


def test_tool_uses_without_an_id_or_name_are_skipped_and_odd_input_becomes_an_object() -> None:
    log = logged(
        user("go"), start("s1"),
        {"type": "agent.tool_use", "name": "bash", "input": {}},
        {"type": "agent.tool_use", "id": "t0", "input": {}},
        {"type": "agent.tool_use", "id": "t1", "name": "bash", "input": "ls"},
        end("s1"), tool_result("t1"),
    )  # fmt: skip

    assert rebuild(log)[1:] == [
        {"role": "assistant", "content": [use_block("t1", input={})]},
        {"role": "user", "content": [result_block("t1")]},
    ]


def test_result_content_keeps_what_a_tool_result_may_hold() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}
    search = {"type": "search_result", "source": "https://x", "title": "X", "content": text("found")}

    assert result_blocks([*text("a"), {"type": "text", "text": ""}, image, search, {"type": "search_result"}, 7]) == [
        *text("a"),
        image,
        search,
    ]
    log = logged(user("go"), start("s1"), tool_use("t1"), end("s1"), {**tool_result("t1"), "content": []})
    assert rebuild(log)[-1]["content"] == [{"type": "tool_result", "tool_use_id": "t1"}]


def test_a_block_left_out_of_the_conversation_is_logged_with_its_type_and_why(caplog: pytest.LogCaptureFixture) -> None:
    content = [
        {"type": "text", "text": "look"},
        {"type": "image", "source": {"type": "base64"}},  # no media_type, no data
        {"type": "hologram", "text": "secret words"},
    ]
    with caplog.at_level("WARNING", logger="corral.harness.conversation"):
        assert user_blocks(content) == [{"type": "text", "text": "look"}]
    dropped = [r for r in caplog.records if r.getMessage() == "content block left out of the conversation"]
    assert [r.fields["type"] for r in dropped] == ["image", "hologram"]  # type: ignore[attr-defined]
    assert "not a valid image block" in dropped[0].fields["why"]  # type: ignore[attr-defined]
    assert all("secret words" not in str(r.fields) for r in dropped)  # type: ignore[attr-defined]
