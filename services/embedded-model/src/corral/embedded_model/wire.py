"""Messages API wire format: Message JSON, server-sent event frames, error bodies, ids."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import string
from collections.abc import AsyncIterator

from pydantic import JsonValue

from corral.embedded_model.reply import Reply
from corral.embedded_model.script import BlockSpec, TextBlockSpec

JsonObject = dict[str, JsonValue]

_ID_ALPHABET = string.ascii_letters + string.digits
_WORD_CHUNK = re.compile(r"\S+\s*|\s+")
JSON_CHUNK_CHARS = 16


def new_id(prefix: str) -> str:
    """An id shaped like Anthropic's, e.g. ``msg_01...``, ``toolu_01...``, ``req_01...``."""
    return f"{prefix}_01" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))


def error_body(error_type: str, message: str) -> JsonObject:
    return {"type": "error", "error": {"type": error_type, "message": message}}


def content_block(block: BlockSpec, *, streaming_start: bool = False) -> JsonObject:
    """A response content block; at stream start text is empty and tool input is ``{}``."""
    if isinstance(block, TextBlockSpec):
        return {"type": "text", "text": "" if streaming_start else block.text}
    tool_input: JsonObject = {} if streaming_start else dict(block.input)
    return {
        "type": "tool_use",
        "id": new_id("toolu"),
        "name": block.name,
        "input": tool_input,
    }


def message(reply: Reply, *, model: str, message_id: str) -> JsonObject:
    """The complete (non-streaming) Message object."""
    content: list[JsonValue] = [content_block(block) for block in reply.content]
    usage = _usage(reply.input_tokens, reply.output_tokens)
    return _envelope(message_id, model, content, reply.stop_reason, usage)


def sse_frame(data: JsonObject) -> bytes:
    """One server-sent event; the event name is the payload's ``type``."""
    event_type = data["type"]
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event_type}\ndata: {payload}\n\n".encode()


def text_chunks(text: str) -> list[str]:
    """Word-sized pieces that concatenate back to ``text`` exactly."""
    return _WORD_CHUNK.findall(text)


def json_chunks(value: JsonObject) -> list[str]:
    """``partial_json`` pieces: an empty one first (as the real API sends), then the JSON."""
    encoded = json.dumps(value, ensure_ascii=False)
    return [""] + [encoded[i : i + JSON_CHUNK_CHARS] for i in range(0, len(encoded), JSON_CHUNK_CHARS)]


async def stream(reply: Reply, *, model: str, message_id: str) -> AsyncIterator[bytes]:
    """The event stream for a reply, in the order the real API sends it.

    ``message_start``; per block ``content_block_start``, deltas, ``content_block_stop``
    (with a ``ping`` after the first block starts, or after ``message_start`` if there
    are no blocks); ``message_delta`` with the stop reason and output tokens;
    ``message_stop``. ``chunk_delay_ms`` is waited before every delta.
    """
    delay = reply.chunk_delay_ms / 1000
    start = _envelope(message_id, model, [], None, _usage(reply.input_tokens, min(1, reply.output_tokens)))
    yield sse_frame({"type": "message_start", "message": start})
    if not reply.content:
        yield sse_frame({"type": "ping"})

    for index, block in enumerate(reply.content):
        started = content_block(block, streaming_start=True)
        yield sse_frame({"type": "content_block_start", "index": index, "content_block": started})
        if index == 0:
            yield sse_frame({"type": "ping"})
        for delta in _deltas(block):
            if delay:
                await asyncio.sleep(delay)
            yield sse_frame({"type": "content_block_delta", "index": index, "delta": delta})
        yield sse_frame({"type": "content_block_stop", "index": index})

    yield sse_frame(
        {
            "type": "message_delta",
            "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": reply.output_tokens},
        }
    )
    yield sse_frame({"type": "message_stop"})


def _deltas(block: BlockSpec) -> list[JsonObject]:
    if isinstance(block, TextBlockSpec):
        return [{"type": "text_delta", "text": chunk} for chunk in text_chunks(block.text)]
    return [{"type": "input_json_delta", "partial_json": chunk} for chunk in json_chunks(dict(block.input))]


def _envelope(
    message_id: str, model: str, content: list[JsonValue], stop_reason: str | None, usage: JsonObject
) -> JsonObject:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


def _usage(input_tokens: int, output_tokens: int) -> JsonObject:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
    }
