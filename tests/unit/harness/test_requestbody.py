"""A streamed model request's body, sent pre-encoded (``corral.harness.requestbody``).

- The JSON the conversation keeps per message is the JSON of the messages as they stand, at every
  step of any log, after any compaction record and after a snapshot restore (a message that changed
  is encoded again).
- A snapshot, its conversation joined from that kept JSON, is byte for byte the snapshot encoded
  from scratch, at every step of any log (``snapshots.encode``).
- The bytes the adapter sends, and the headers the API reads (key, version, content type), are the
  ones the ``anthropic`` SDK's ``client.messages.stream(...)`` (and ``client.messages.count_tokens(...)``)
  sends for the same request, for any conversation, system prompt and tools.
- Errors reach the turn driver as the SDK reads them: the same status, error type and message for
  400 "prompt is too long", 529, 500, 401 and an error event mid-stream; a stream cut off mid-reply
  (the SDK raises its transport's error) is a retryable ``ModelError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import anthropic
import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.harness import snapshots
from corral.harness.fold import FORMAT, SessionFold, decode
from corral.harness.messageblocks import ChatMessage
from corral.harness.messagesclient import MessagesClient, status_error
from corral.harness.messagesmodel import MessagesModel
from corral.harness.model import ModelError, ModelRequest
from corral.harness.requestbody import Messages, encode, messages_json, with_field
from tests.unit.harness.fakes import SESSION_ID
from tests.unit.harness.test_fold import fold_of, logs, records, restored, with_compaction
from tests.unit.harness.test_model import KEY, message_stream, sse

Handler = Callable[[httpx2.Request], httpx2.Response]


def kept_json_is_current(messages: Messages) -> bool:
    return messages_json(messages) == encode([dict(m) for m in messages])


@settings(max_examples=150, deadline=None)
@given(
    prefix=logs(),
    suffix=logs(),
    pick=st.integers(min_value=0, max_value=40),
    cut=st.integers(min_value=0, max_value=42),
    max_result_chars=st.sampled_from([None, 1]),
)
def test_the_json_kept_per_message_is_the_conversations_json_at_every_step(
    prefix: list[dict[str, Any]], suffix: list[dict[str, Any]], pick: int, cut: int, max_result_chars: int | None
) -> None:
    _, data = with_compaction(prefix, suffix, pick, max_result_chars=max_result_chars, summary="S é \u2603")

    fold = SessionFold.empty(max_result_chars=max_result_chars)
    for seq, value in enumerate(data, start=1):
        fold.apply(decode(seq, value))
        if seq % 2:  # also let changes pile up between two requests
            assert kept_json_is_current(fold.conversation.messages()), f"after record {seq}"
        if seq == cut:
            fold = restored(fold, max_result_chars=max_result_chars)
    assert kept_json_is_current(fold.conversation.messages())
    assert kept_json_is_current(fold.conversation.copy().messages())


def snapshot_from_scratch(fold: SessionFold) -> bytes:
    """A snapshot's bytes with its whole value encoded at once (what ``snapshots.encode`` joins instead)."""
    value = {"format": FORMAT, "session_id": SESSION_ID, "seq": fold.last_seq, "state": fold.state()}
    return encode(value).encode()


@settings(max_examples=150, deadline=None)
@given(
    prefix=logs(),
    suffix=logs(),
    pick=st.integers(min_value=0, max_value=40),
    cut=st.integers(min_value=0, max_value=42),
    asks=st.sets(st.integers(min_value=0, max_value=84)),
    max_result_chars=st.sampled_from([None, 1]),
)
def test_a_snapshot_joined_from_the_kept_json_is_the_snapshot_encoded_from_scratch_at_every_step(
    prefix: list[dict[str, Any]],
    suffix: list[dict[str, Any]],
    pick: int,
    cut: int,
    asks: set[int],
    max_result_chars: int | None,
) -> None:
    """Whatever changed since the last request (``asks``: the records after which one is built, so
    some kept JSON is current and some is not), after a compaction record and after a restore."""
    _, data = with_compaction(prefix, suffix, pick, max_result_chars=max_result_chars, summary="S é \u2603")

    fold = SessionFold.empty(max_result_chars=max_result_chars)
    assert snapshots.encode(SESSION_ID, fold) == snapshot_from_scratch(fold)
    for seq, value in enumerate(data, start=1):
        fold.apply(decode(seq, value))
        if seq in asks:
            fold.conversation.messages()
        assert fold.state_json() == encode(fold.state()), f"after record {seq}"
        assert snapshots.encode(SESSION_ID, fold) == snapshot_from_scratch(fold), f"after record {seq}"
        if seq == cut:
            again = restored(fold, max_result_chars=max_result_chars)
            assert again.state() == fold.state()
            fold = again


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(st.characters(exclude_categories=("Cs",))),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)


@given(obj=st.dictionaries(st.text(max_size=4), JSON, max_size=4), key=st.text(max_size=4), value=JSON)
def test_a_field_added_to_an_encoded_object_is_the_objects_encoding_with_it(
    obj: dict[str, Any], key: str, value: Any
) -> None:
    obj.pop(key, None)
    assert with_field(encode(obj), key, encode(value)) == encode({**obj, key: value})


# --- what reaches the model: the adapter against the SDK's stream helper ---------------------------------


def client(handler: Handler) -> anthropic.AsyncAnthropic:
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    return anthropic.AsyncAnthropic(api_key=KEY, base_url="http://model.test", max_retries=0, http_client=http)


async def through_the_client(request: ModelRequest, handler: Handler) -> None:
    """The request as ``client.messages.stream(...)`` sends it (what the adapter did before)."""
    async with client(handler).messages.stream(
        model=request.model,
        system=request.system if request.system else anthropic.omit,
        messages=cast("Any", list(request.messages)),
        max_tokens=request.max_tokens,
        tools=cast("Any", list(request.tools)) if request.tools else anthropic.omit,
    ) as stream:
        await stream.get_final_message()


def adapter(handler: Handler) -> MessagesModel:
    return MessagesModel(
        MessagesClient(base_url="http://model.test", api_key=KEY, transport=httpx2.MockTransport(handler))
    )


async def through_the_adapter(request: ModelRequest, handler: Handler) -> None:
    async def on_text(_index: int, _text: str) -> None:
        return None

    await adapter(handler).stream(request, on_text)


def sent(send: Callable[[ModelRequest, Handler], Any], request: ModelRequest) -> httpx2.Request:
    seen: list[httpx2.Request] = []

    def handler(http_request: httpx2.Request) -> httpx2.Response:
        http_request.read()
        seen.append(http_request)
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=message_stream(["ok"]))

    asyncio.run(send(request, handler))
    return seen[0]


#: What the API reads of a request's headers (the SDK adds its own telemetry, ``x-stainless-*``).
_API_HEADERS = ("authorization", "anthropic-version", "content-type", "accept", "content-length", "host")
TOOL = {
    "name": "lookup",
    "description": "Looks a word up \u2603",
    "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
}
WORDS = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=20)


@settings(max_examples=60, deadline=None)
@given(
    events=logs(),
    texts=st.lists(WORDS, max_size=4),
    system=st.sampled_from([None, "", "Be brief. \u00e9\u4e2d"]),
    tools=st.sampled_from([(), (TOOL,)]),
    max_tokens=st.integers(min_value=1, max_value=64_000),
)
def test_the_adapter_sends_the_bytes_and_headers_the_clients_stream_helper_sends(
    events: list[dict[str, Any]],
    texts: list[str],
    system: str | None,
    tools: tuple[dict[str, Any], ...],
    max_tokens: int,
) -> None:
    said = [
        {"type": "user.message", "id": f"said_{n}", "content": [{"type": "text", "text": t}]}
        for n, t in enumerate(texts)
    ]
    fold = fold_of(records([*events, *said]))
    messages = fold.conversation.messages()
    if not messages:
        messages = Messages(
            [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            ['{"role":"user","content":[{"type":"text","text":"hi"}]}'],
        )
    request = ModelRequest(model="claude-test", messages=messages, max_tokens=max_tokens, system=system, tools=tools)

    expected = sent(through_the_client, request)
    actual = sent(through_the_adapter, request)

    assert actual.content == expected.content
    assert (actual.method, actual.url) == (expected.method, expected.url)
    assert [actual.headers.get(k) for k in _API_HEADERS] == [expected.headers.get(k) for k in _API_HEADERS]


async def count_through_the_client(request: ModelRequest, handler: Handler) -> None:
    await client(handler).messages.count_tokens(
        model=request.model,
        system=request.system if request.system else anthropic.omit,
        messages=cast("Any", list(request.messages)),
        tools=cast("Any", list(request.tools)) if request.tools else anthropic.omit,
    )


async def count_through_the_adapter(request: ModelRequest, handler: Handler) -> None:
    assert await adapter(handler).count_tokens(request) == 1234


def counted(send: Callable[[ModelRequest, Handler], Any], request: ModelRequest) -> httpx2.Request:
    seen: list[httpx2.Request] = []

    def handler(http_request: httpx2.Request) -> httpx2.Response:
        http_request.read()
        seen.append(http_request)
        return httpx2.Response(200, json={"input_tokens": 1234})

    asyncio.run(send(request, handler))
    return seen[0]


@settings(max_examples=30, deadline=None)
@given(
    events=logs(),
    texts=st.lists(WORDS, max_size=3),
    system=st.sampled_from([None, "", "Be brief. \u00e9\u4e2d"]),
    tools=st.sampled_from([(), (TOOL,)]),
)
def test_count_tokens_sends_the_bytes_and_headers_the_clients_count_tokens_sends(
    events: list[dict[str, Any]], texts: list[str], system: str | None, tools: tuple[dict[str, Any], ...]
) -> None:
    said = [
        {"type": "user.message", "id": f"said_{n}", "content": [{"type": "text", "text": t}]}
        for n, t in enumerate(texts)
    ]
    messages = fold_of(records([*events, *said])).conversation.messages()
    request = ModelRequest(model="claude-test", messages=messages, max_tokens=1, system=system, tools=tools)

    expected = counted(count_through_the_client, request)
    actual = counted(count_through_the_adapter, request)

    assert actual.content == expected.content
    assert (actual.method, actual.url) == (expected.method, expected.url)
    assert [actual.headers.get(k) for k in _API_HEADERS] == [expected.headers.get(k) for k in _API_HEADERS]


async def test_a_server_without_count_tokens_is_not_asked_again() -> None:
    asked: list[str] = []

    def handler(http_request: httpx2.Request) -> httpx2.Response:
        asked.append(http_request.url.path)
        return httpx2.Response(404, json={"type": "error", "error": {"type": "not_found_error", "message": "no"}})

    model = adapter(handler)
    request = ModelRequest(
        model="claude-test", messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}], max_tokens=1
    )

    assert await model.count_tokens(request) is None
    assert await model.count_tokens(request) is None
    assert asked == ["/v1/messages/count_tokens"]


def test_a_plain_list_of_messages_is_sent_as_the_client_would_send_it() -> None:
    plain: list[ChatMessage] = [{"role": "user", "content": [{"type": "text", "text": "caf\u00e9 \U0001f600"}]}]
    request = ModelRequest(model="claude-test", messages=plain, max_tokens=10)

    assert sent(through_the_adapter, request).content == sent(through_the_client, request).content


# --- errors: the same ModelError as through the client's stream helper --------------------------------


def answering(status: int, error_type: str, message: str) -> Handler:
    def handler(request: httpx2.Request) -> httpx2.Response:
        body = {"type": "error", "error": {"type": error_type, "message": message}}
        return httpx2.Response(status, json=body)

    return handler


def error_event_mid_stream(request: httpx2.Request) -> httpx2.Response:
    body = message_stream(["partial"]).split(b"event: content_block_stop")[0]
    body += sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)


class _CutOff(httpx2.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield message_stream(["partial"]).split(b"event: content_block_stop")[0]
        raise httpx2.RemoteProtocolError("peer closed connection without sending complete message body")


def cut_off_mid_reply(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=_CutOff())


async def error_through_the_client(request: ModelRequest, handler: Handler) -> ModelError:
    try:
        await through_the_client(request, handler)
    except anthropic.APIStatusError as exc:  # what the SDK read of the answer, mapped as the adapter maps it
        return status_error(exc.status_code, exc.type or "", exc.api_message or "", secrets=[KEY])
    raise AssertionError("the client raised nothing")


async def error_through_the_adapter(request: ModelRequest, handler: Handler) -> ModelError:
    with pytest.raises(ModelError) as raised:
        await through_the_adapter(request, handler)
    return raised.value


@pytest.mark.parametrize(
    ("handler", "error_type", "retryable"),
    [
        (answering(400, "invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum"),
         "model_request_failed_error", False),
        (answering(529, "overloaded_error", "Overloaded"), "model_overloaded_error", True),
        (answering(500, "api_error", "Internal server error"), "model_request_failed_error", True),
        (answering(401, "authentication_error", f"invalid x-api-key {KEY}"), "model_request_failed_error", False),
        (error_event_mid_stream, "model_overloaded_error", True),
    ],
    ids=["prompt-too-long", "overloaded", "server-error", "key-refused", "error-event"],
)  # fmt: skip
async def test_errors_are_read_as_the_sdks_stream_helper_reads_them(
    handler: Handler, error_type: str, retryable: bool
) -> None:
    request = ModelRequest(
        model="claude-test", messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}], max_tokens=10
    )

    expected = await error_through_the_client(request, handler)
    actual = await error_through_the_adapter(request, handler)

    assert (actual.error_type, actual.retryable, actual.status, actual.message) == (
        expected.error_type,
        expected.retryable,
        expected.status,
        expected.message,
    )
    assert (actual.error_type, actual.retryable) == (error_type, retryable)
    assert KEY not in actual.message


async def test_a_stream_cut_off_mid_reply_is_a_retryable_model_error() -> None:
    """The SDK raises its transport's own error once the reply has started (not an
    ``AnthropicError``); the adapter makes it a ``model_request_failed_error`` the turn retries,
    instead of an exception that ends the run."""
    request = ModelRequest(
        model="claude-test", messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}], max_tokens=10
    )

    with pytest.raises(httpx2.RemoteProtocolError):
        await through_the_client(request, cut_off_mid_reply)
    with pytest.raises(ModelError) as actual:
        await through_the_adapter(request, cut_off_mid_reply)
    assert (actual.value.error_type, actual.value.retryable) == ("model_request_failed_error", True)
    assert "RemoteProtocolError" in actual.value.message and KEY not in actual.value.message
