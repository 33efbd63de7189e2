from __future__ import annotations

from typing import Any

from corral.harness.conversation import agent_blocks, rebuild, user_blocks
from tests.unit.harness.fakes import agent, end, idle, logged, running, start, text, user


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
