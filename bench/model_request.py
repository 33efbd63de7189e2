"""Benchmark of the harness's own cost per model request, at a short and at a long conversation.

Folds a conversation of N text blocks (alternating user and assistant turns, 200 characters each)
with the harness's ``ConversationBuilder``, then sends it through ``MessagesModel.stream`` (the
harness's Messages client over ``httpx2``) to an in-process transport (``httpx2.MockTransport``)
that answers at once with a short streamed reply. Nothing crosses a socket, so what is measured is
the harness and its HTTP client: building the request body and the client's preparation of it
(*setup*: from the call to the moment the transport holds the request, its body encoded), then the
whole call (*total*: setup, the transport reading the body, reading the reply's events and folding
them into the reply).

Prints p50 / p90 per size and the ratio of the long conversation's setup p50 to the short one's
(a harness whose per-request cost does not grow with the conversation keeps it near the ratio of
the bytes to copy, well below the ratio of the block counts).

    uv run python bench/model_request.py [--sizes 100 10000] [--calls 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx2

from corral.harness.conversation import ConversationBuilder
from corral.harness.messagesclient import MessagesClient
from corral.harness.messagesmodel import MessagesModel
from corral.harness.model import ModelRequest

_TEXT = "The quick brown fox jumps over the lazy dog; " * 5


def _sse(data: dict[str, object]) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


_EVENTS: tuple[dict[str, object], ...] = (
    {
        "type": "message_start",
        "message": {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": "claude-bench",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 1},
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ok"}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 1},
    },
    {"type": "message_stop"},
)
_REPLY = b"".join(_sse(event) for event in _EVENTS)


def conversation(blocks: int) -> ConversationBuilder:
    builder = ConversationBuilder()
    for n in range(blocks):
        kind = "user.message" if n % 2 == 0 else "agent.message"
        builder.apply({"id": f"sevt_{n:06d}", "type": kind, "content": [{"type": "text", "text": f"{n} {_TEXT}"}]})
    return builder


async def measure(blocks: int, calls: int) -> tuple[list[float], list[float], int]:
    reached: list[float] = []
    sizes: list[int] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        reached.append(time.perf_counter())
        sizes.append(len(request.read()))
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=_REPLY)

    model = MessagesModel(
        MessagesClient(base_url="http://model.invalid", api_key="bench", transport=httpx2.MockTransport(answer))
    )
    builder = conversation(blocks)

    streamed: list[str] = []

    async def on_text(_index: int, text: str) -> None:
        streamed.append(text)

    setups: list[float] = []
    totals: list[float] = []
    for call in range(calls + 3):
        started = time.perf_counter()
        request = ModelRequest(model="claude-bench", messages=builder.messages(), max_tokens=1024, system="Be brief.")
        await model.stream(request, on_text)
        ended = time.perf_counter()
        if call >= 3:  # the first calls warm the client up
            setups.append((reached[-1] - started) * 1000)
            totals.append((ended - started) * 1000)
    await model.close()
    return setups, totals, sizes[-1]


def _pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 10_000])
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    setup_p50: dict[int, float] = {}
    for blocks in args.sizes:
        setups, totals, body = await measure(blocks, args.calls)
        setup_p50[blocks] = statistics.median(setups)
        print(
            f"{blocks:>6} blocks ({body / 1e6:.2f} MB body): setup p50 {statistics.median(setups):7.2f} ms "
            f"p90 {_pct(setups, 90):7.2f} ms | total p50 {statistics.median(totals):7.2f} ms "
            f"p90 {_pct(totals, 90):7.2f} ms"
        )
    first, last = args.sizes[0], args.sizes[-1]
    print(f"setup p50 ratio {last}/{first} blocks: {setup_p50[last] / setup_p50[first]:.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
