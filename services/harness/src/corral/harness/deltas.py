"""Stream-only previews of an ``agent.message`` while the model is still writing it.

Frames go to core NATS on ``subjects.deltas(session_id)``; nothing is stored, and the gateway
forwards them only to clients that asked for ``event_deltas[]=agent.message``. A preview is one
``event_start`` then ``event_delta`` frames; the ``agent.message`` with the same id, appended at the
end of the turn, is authoritative (a failed request's preview is ended by its
``span.model_request_end``). Publishing is best effort: a lost frame never fails a turn.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from corral.bus import Bus
from corral.contracts import subjects

logger = logging.getLogger(__name__)

Frame = dict[str, Any]


def event_start(event_id: str) -> Frame:
    return {"type": "event_start", "event": {"type": "agent.message", "id": event_id}}


def event_delta(event_id: str, index: int, text: str) -> Frame:
    return {
        "type": "event_delta",
        "event_id": event_id,
        "delta": {"type": "content_delta", "index": index, "content": {"type": "text", "text": text}},
    }


class Deltas(Protocol):
    async def publish(self, session_id: str, frame: Frame) -> None: ...


class BusDeltas:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def publish(self, session_id: str, frame: Frame) -> None:
        try:
            await self._bus.publish_core(subjects.deltas(session_id), json.dumps(frame).encode())
        except Exception:  # best effort by contract: the stored agent.message is what counts
            logger.debug("dropped a delta frame", extra={"fields": {"session_id": session_id}}, exc_info=True)


class Preview:
    """The preview of one future ``agent.message``: accumulates text and publishes its frames."""

    def __init__(self, deltas: Deltas, session_id: str, event_id: str) -> None:
        self._deltas = deltas
        self._session_id = session_id
        self.event_id = event_id
        self._texts: list[str] = []

    @property
    def texts(self) -> tuple[str, ...]:
        """What was streamed so far, one string per text block."""
        return tuple(self._texts)

    async def on_text(self, index: int, text: str) -> None:
        if not text:
            return
        if not self._texts:
            await self._deltas.publish(self._session_id, event_start(self.event_id))
        while len(self._texts) <= index:
            self._texts.append("")
        self._texts[index] += text
        await self._deltas.publish(self._session_id, event_delta(self.event_id, index, text))
