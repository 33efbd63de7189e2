"""The wire: JSON lines on stdin and stdout, ``ping`` and ``cancel`` answered at once, tools on workers."""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from typing import Any

from .cancellation import Call
from .protocol import PROTOCOL, Result
from .text import cap, clean, split
from .toolbox import Toolbox


class Server:
    def __init__(self, toolbox: Toolbox, reader: Any, writer: Any, *, sealed: bool = False) -> None:
        self.toolbox = toolbox
        self.sealed = sealed
        self.reader = reader
        self.writer = writer
        self.work: queue.Queue[tuple[dict[str, Any], Call]] = queue.Queue()
        self.calls: dict[str, Call] = {}
        self.calls_lock = threading.Lock()
        self.write_lock = threading.Lock()

    def reply(self, request_id: object, result: Result, **extra: object) -> None:
        # capped again here: no reply is longer than the output limit, whatever produced it
        text = cap(clean(result.text), self.toolbox.config.output_limit + 200)
        pieces = split(text, self.toolbox.config.part_bytes)
        bodies: list[dict[str, object]]
        if len(pieces) == 1:
            bodies = [{"id": request_id, "content": [{"type": "text", "text": text}], "is_error": result.is_error}]
            bodies[0].update(extra)
        else:
            total = len(text.encode("utf-8"))
            bodies = [
                {
                    "id": request_id,
                    "part": index,
                    "parts": len(pieces),
                    "bytes": total,
                    "content": [{"type": "text", "text": piece}],
                    "is_error": result.is_error,
                }
                for index, piece in enumerate(pieces)
            ]
        # one reply's parts are never interleaved with another reply's lines
        with self.write_lock:
            for body in bodies:
                self.writer.write(json.dumps(body, ensure_ascii=False).encode("utf-8") + b"\n")
            self.writer.flush()

    def timeout_s(self, value: object) -> float:
        config = self.toolbox.config
        ms = (
            value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else config.default_timeout_ms
        )
        return min(ms, config.max_timeout_ms) / 1000

    def worker(self) -> None:
        while True:
            request, call = self.work.get()
            try:
                result = self.toolbox.run(str(request.get("tool")), request.get("input", {}), call)
            except Exception as exc:
                result = Result(f"the exec agent failed: {type(exc).__name__}: {exc}", is_error=True)
            with self.calls_lock:
                self.calls.pop(str(request.get("id")), None)
            self.reply(request.get("id"), result)

    def serve(self) -> None:
        for _ in range(self.toolbox.config.workers):
            threading.Thread(target=self.worker, daemon=True).start()
        self.toolbox.shell.start()
        for line in self.reader:
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("a request is a JSON object")
            except ValueError as exc:
                self.reply(None, Result(f"unreadable request: {exc}", is_error=True))
                continue
            tool = request.get("tool")
            request_id = request.get("id")
            if tool == "ping":
                self.reply(request_id, Result("pong"), protocol=PROTOCOL, pid=os.getpid(), sealed=self.sealed)
            elif tool == "cancel":
                target = str((request.get("input") or {}).get("target"))
                with self.calls_lock:
                    running = list(self.calls.values()) if target == "*" else [self.calls.get(target)]
                stopped = [call for call in running if call is not None]
                for call in stopped:
                    call.cancelled.set()
                self.reply(request_id, Result("cancelled" if stopped else "not running"))
            else:
                budget = self.timeout_s(request.get("timeout_ms"))
                call = Call(request_id, time.monotonic() + budget, budget)
                with self.calls_lock:
                    self.calls[str(request_id)] = call
                self.work.put((request, call))
