#!/usr/bin/env python3
"""Follow Corral's session log and catalog on NATS JetStream, from your own program.

Depends on nats-py only (``pip install nats-py``). Connects as the read-only NATS user that
``make up`` writes to ``.corral/nats-subscriber.env`` (``NATS_URL``, ``NATS_USER``,
``NATS_PASSWORD``), creates the durable pull consumer ``--consumer`` on ``CORRAL_SESSIONS`` (and
``CORRAL_CATALOG``) or resumes it, and prints each record, or appends it to ``--out`` as JSON lines.
That user's NATS account holds mirrors of those streams under the same names, with the same
sequences: the consumer is made there, never on Corral's own streams.

Delivery is at-least-once: a record is acknowledged only after it is written, so one whose
acknowledgement a crash lost comes again. ``--out`` makes it exactly-once in effect: each line
carries the record's stream sequence, and on start the subscriber skips whatever it already wrote
(sequences only grow, and the consumer hands out one message at a time, in order).

Records larger than one NATS message are stored in parts (``Corral-Record-Part: <i>/<n>``); this
program joins them, fetching the earlier parts of a record it resumes in the middle of. The wire
format is described in README.md next to this file. Run with ``--help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

#: What Corral stores, by the name used on the command line: (stream, every subject it holds).
STREAMS = {
    "sessions": ("CORRAL_SESSIONS", "corral.sessions.*"),
    "catalog": ("CORRAL_CATALOG", "corral.catalog.>"),
}

PART = "Corral-Record-Part"  # "<i>/<n>": part i (from 1) of a record stored in n messages
RECORD_ID = "Corral-Record-Id"  # shared by every part of one record
DIGEST = "Corral-Record-Digest"  # hex SHA-256 of the whole record, on every part
FIRST_SEQ = "Corral-Record-First-Seq"  # on parts 2..n: the stream sequence of part 1
ATOMIC = "Corral-Record-Atomic"  # "1" instead, on parts 2..n stored in one atomic batch: consecutive


@dataclass(frozen=True)
class Record:
    """One whole record: a message, or the parts of one joined."""

    stream: str
    subject: str
    seq: int  # the stream sequence of its last (or only) message: "everything up to seq is read"
    data: bytes
    headers: dict[str, str]


class Parts:
    """Joins the parts of records stored in parts; holds an incomplete record per subject."""

    def __init__(self, stream: str, js: JetStreamContext) -> None:
        self.stream = stream
        self.js = js
        self.pending: dict[str, list[Record]] = {}

    async def feed(self, msg: Record) -> Record | None:
        """The record ``msg`` completes (``msg`` itself when it is whole), or ``None``."""
        part = msg.headers.get(PART)
        if part is None:
            self.pending.pop(msg.subject, None)  # a part set something else follows was abandoned by its writer
            return msg
        index, count = (int(x) for x in part.split("/", 1))
        held = self.pending.pop(msg.subject, [])
        if index == 1:
            held = [msg]
        elif held and self._chain([*held, msg]):
            held.append(msg)
        else:  # resumed in the middle of a record: its earlier parts were acknowledged before a restart
            held = [*await self._earlier(msg, index), msg]
            if not self._chain(held):
                return None
        if len(held) < count:
            self.pending[msg.subject] = held
            return None
        data = b"".join(p.data for p in held)
        if hashlib.sha256(data).hexdigest() != msg.headers.get(DIGEST):
            print(f"record ending at #{msg.seq} does not match its digest; skipped", file=sys.stderr)
            return None
        return Record(self.stream, msg.subject, msg.seq, data, held[0].headers)

    async def _earlier(self, msg: Record, index: int) -> list[Record]:
        """Parts 1..index-1 of ``msg``'s record: consecutive messages on its subject from part 1's sequence."""
        # stored in one atomic batch: part i is i - 1 sequences after part 1
        atomic = msg.headers.get(ATOMIC) == "1"
        seq = msg.seq - (index - 1) if atomic else int(msg.headers.get(FIRST_SEQ, "0"))
        parts: list[Record] = []
        while seq and len(parts) < index - 1:
            raw = await self.js.get_msg(self.stream, seq=seq, subject=msg.subject, next=True)
            assert raw.seq is not None and raw.subject is not None
            parts.append(Record(self.stream, raw.subject, raw.seq, raw.data or b"", dict(raw.headers or {})))
            seq = raw.seq + 1
        return parts

    @staticmethod
    def _chain(parts: list[Record]) -> bool:
        first = parts[0].headers
        for i, p in enumerate(parts, 1):
            if p.headers.get(RECORD_ID) != first.get(RECORD_ID) or not p.headers.get(PART, "").startswith(f"{i}/"):
                return False
        return True


class Output:
    """Where records go: printed, or appended to a JSON-lines file that is also the checkpoint."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.last: dict[str, int] = {}  # stream -> the highest sequence written
        self.file = None
        if path is None:
            return
        if path.exists():
            text = path.read_bytes()
            complete = text[: text.rfind(b"\n") + 1]  # a line a crash cut short was never acknowledged
            if len(complete) < len(text):
                path.write_bytes(complete)
            for line in complete.splitlines():
                entry = json.loads(line)
                self.last[entry["stream"]] = max(self.last.get(entry["stream"], 0), entry["seq"])
        self.file = path.open("a", encoding="utf-8")

    def seen(self, record: Record) -> bool:
        return record.seq <= self.last.get(record.stream, 0)

    def write(self, record: Record) -> None:
        body = json.loads(record.data)
        kind, _, name = record.subject.rpartition(".")
        entry: dict[str, Any] = {
            "stream": record.stream,
            "seq": record.seq,
            "subject": record.subject,
            "type": body.get("type"),
            "id": body.get("id"),
            ("session_id" if record.stream == "CORRAL_SESSIONS" else "object_id"): name,
            "record": body,
        }
        if self.file is None:
            where = "session" if record.stream == "CORRAL_SESSIONS" else kind.rpartition(".")[2]
            print(f"{record.stream} #{record.seq} {where} {name} {entry['type']} {entry['id'] or ''}", flush=True)
        else:
            self.file.write(json.dumps(entry, separators=(",", ":")) + "\n")
            self.file.flush()
            os.fsync(self.file.fileno())  # on disk before the acknowledgement
        self.last[record.stream] = record.seq


async def consumer(js: JetStreamContext, stream: str, subject: str, args: argparse.Namespace) -> Any:
    """Bind to the durable pull consumer ``args.consumer`` on ``stream``, creating it when missing."""
    try:
        info = await js.consumer_info(stream, args.consumer)
    except nats.js.errors.NotFoundError:
        config = ConsumerConfig(
            durable_name=args.consumer,
            filter_subject=subject,
            ack_policy=AckPolicy.EXPLICIT,  # each message acknowledged by itself, never "everything before"
            max_ack_pending=1,  # one message at a time: after a restart nothing newer overtakes a redelivery
            ack_wait=args.ack_wait,  # what a crashed subscriber held comes back after this long
            deliver_policy=DeliverPolicy.NEW if args.deliver == "new" else DeliverPolicy.ALL,
        )
        await js.pull_subscribe(subject, durable=args.consumer, stream=stream, config=config)
        print(f"created consumer {args.consumer!r} on {stream} ({subject})", file=sys.stderr)
    else:
        if info.config.filter_subject != subject:
            raise SystemExit(
                f"consumer {args.consumer!r} on {stream} reads {info.config.filter_subject}, not {subject}: "
                "choose another --consumer name"
            )
        print(f"resuming consumer {args.consumer!r} on {stream} after #{info.ack_floor.stream_seq}", file=sys.stderr)
    return await js.pull_subscribe_bind(durable=args.consumer, stream=stream)


async def follow(
    js: JetStreamContext, stream: str, subject: str, out: Output, args: argparse.Namespace, stop: asyncio.Event
) -> None:
    sub = await consumer(js, stream, subject, args)
    parts = Parts(stream, js)
    handled = 0
    try:
        while not stop.is_set():
            try:
                msgs: list[Msg] = await sub.fetch(1, timeout=1)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs:
                raw = Record(stream, msg.subject, msg.metadata.sequence.stream, msg.data, dict(msg.headers or {}))
                record = await parts.feed(raw)
                if record is not None and out.seen(record):
                    print(f"{stream} #{record.seq} already written; skipped (a redelivery)", file=sys.stderr)
                elif record is not None:
                    out.write(record)
                handled += 1
                if handled == args.exit_after:  # a crash after processing, before the acknowledgement
                    os._exit(3)
                await msg.ack_sync()
    finally:
        await sub.unsubscribe()


async def main(args: argparse.Namespace) -> int:
    url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")  # a cluster: its servers, comma-separated
    user = os.environ.get("NATS_USER", "subscriber")

    async def on_error(error: Exception) -> None:
        print(f"nats: {error}", file=sys.stderr)  # e.g. a Permissions Violation

    nc: Client = await nats.connect(
        url.split(","),
        user=user,
        password=os.environ.get("NATS_PASSWORD"),
        inbox_prefix=f"_INBOX.{user}",  # the only subjects this user may subscribe to
        name=f"bus-subscriber-{args.consumer}",
        error_cb=on_error,
        max_reconnect_attempts=-1,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    out = Output(args.out)
    js = nc.jetstream()
    try:
        async with asyncio.TaskGroup() as group:
            for name in args.streams.split(","):
                stream, subject = STREAMS[name]
                if name == "sessions" and args.session:
                    subject = f"corral.sessions.{args.session}"
                group.create_task(follow(js, stream, subject, out, args, stop))
    finally:
        await nc.close()  # every acknowledgement was confirmed (ack_sync): nothing is left to flush
    return 0


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--consumer", required=True, help="durable consumer name: created once, then resumed")
    parser.add_argument("--streams", default="sessions,catalog", help="sessions, catalog or both (default)")
    parser.add_argument("--session", help="only this session's log (the consumer's filter; set at creation)")
    parser.add_argument("--deliver", choices=("all", "new"), default="all", help="where a new consumer starts")
    parser.add_argument("--ack-wait", type=float, default=10.0, help="seconds before an unacknowledged record returns")
    parser.add_argument("--out", type=Path, help="append JSON lines here (and skip what it already holds)")
    parser.add_argument(
        "--exit-after",
        type=int,
        default=0,
        help="crash demo: exit abruptly after handling the N-th message of a stream, before acknowledging it",
    )
    args = parser.parse_args()
    if any(name not in STREAMS for name in args.streams.split(",")):
        parser.error("--streams: sessions, catalog or sessions,catalog")
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(arguments())))
