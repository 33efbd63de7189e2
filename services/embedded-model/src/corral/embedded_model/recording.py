"""A bounded record of the Messages requests received, for tests to inspect."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import count

from pydantic import JsonValue


@dataclass(frozen=True)
class RecordedRequest:
    seq: int
    request_id: str
    scenario: str | None
    turn_index: int
    stream: bool
    errored: bool
    body: JsonValue
    received_at: float
    """Wall-clock time (Unix seconds) the request arrived, before its body was read."""

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "seq": self.seq,
            "request_id": self.request_id,
            "scenario": self.scenario,
            "turn_index": self.turn_index,
            "stream": self.stream,
            "errored": self.errored,
            "body": self.body,
            "received_at": self.received_at,
        }


class RequestLog:
    """The last ``capacity`` requests, oldest first."""

    def __init__(self, capacity: int) -> None:
        self._entries: deque[RecordedRequest] = deque(maxlen=capacity)
        self._seq = count(1)

    def record(
        self,
        *,
        request_id: str,
        scenario: str | None,
        turn_index: int,
        stream: bool,
        errored: bool,
        body: JsonValue,
        received_at: float,
    ) -> RecordedRequest:
        entry = RecordedRequest(
            seq=next(self._seq),
            request_id=request_id,
            scenario=scenario,
            turn_index=turn_index,
            stream=stream,
            errored=errored,
            body=body,
            received_at=received_at,
        )
        self._entries.append(entry)
        return entry

    def entries(self, scenario: str | None = None) -> list[RecordedRequest]:
        return [e for e in self._entries if scenario is None or e.scenario == scenario]

    def clear(self) -> int:
        cleared = len(self._entries)
        self._entries.clear()
        return cleared
