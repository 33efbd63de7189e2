"""The combined output of one shell command, kept within the limit, up to its end marker."""

from __future__ import annotations

from collections import deque


class Collector:
    """Combined output of one command: head and tail kept within the limit, and the end marker found."""

    def __init__(self, marker: bytes, limit: int) -> None:
        self.marker = marker
        self.head_limit = limit - limit // 4
        self.tail_limit = limit // 4
        self.head = bytearray()
        # the tail as the chunks that hold it (whole chunks dropped from the left), so a long flood
        # costs no copying of the tail per chunk
        self.tail: deque[bytes] = deque()
        self.tail_size = 0
        self.total = 0
        self.window = bytearray()
        self.status: tuple[int, str] | None = None
        self.rest = b""

    def feed(self, chunk: bytes) -> bool:
        """Take output; ``True`` once the end marker and its line (exit code, cwd) arrived."""
        self.window += chunk
        at = self.window.find(self.marker)
        if at >= 0:
            end = self.window.find(b"\n", at + len(self.marker))
            if end < 0:
                return False
            self._emit(bytes(self.window[:at]))
            code, _, cwd = bytes(self.window[at + len(self.marker) : end]).decode("utf-8", "replace").partition(" ")
            self.status = (int(code) if code.strip().lstrip("-").isdigit() else -1, cwd)
            self.rest = bytes(self.window[end + 1 :])
            self.window = bytearray()
            return True
        keep = len(self.marker) - 1
        if len(self.window) > keep:
            self._emit(bytes(self.window[: len(self.window) - keep]))
            del self.window[: len(self.window) - keep]
        return False

    def flush(self) -> None:
        self._emit(bytes(self.window))
        self.window = bytearray()

    def _emit(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail.append(data)
            self.tail_size += len(data)
            while self.tail and self.tail_size - len(self.tail[0]) >= self.tail_limit:
                self.tail_size -= len(self.tail.popleft())

    def text(self) -> str:
        head = bytes(self.head).decode("utf-8", "replace")
        kept = b"".join(self.tail)[-self.tail_limit :] if self.tail_limit else b""
        if self.total <= len(self.head) + len(kept):
            return head + kept.decode("utf-8", "replace")
        omitted = self.total - len(self.head) - len(kept)
        tail = kept.decode("utf-8", "ignore")
        return f"{head}\n[output truncated: {omitted} of {self.total} bytes omitted here]\n{tail}"
