"""What a sandbox can make the manager hold and log (security review, "Safety floor": the exec
agent's channel was unbounded).

A sandbox floods every output it can reach, for ``CORRAL_TEST_FLOOD_S`` seconds (15 by default; the
README gives what a minute does): the manager's memory (it runs in this process) and what it logs
(every record, formatted as the service would write it) must stay within the documented bounds.
Then the host writes into the agent's stdout and stderr itself (as root, through
``/proc/<pid>/fd``: a sandbox that got past the agent's seal): an oversized line or one that is not
a reply ends that sandbox with a tool error, and the next call gets a fresh container.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from corral.contracts.sandbox import SandboxOp
from corral.sandbox_manager.stderr_excerpt import EXCERPT_WINDOW_S, STDERR_MAX_BYTES
from corral.telemetry.logs import JsonFormatter
from tests.integration.sandbox_manager.conftest import Manager, containers_of, eventually

pytestmark = pytest.mark.integration

FLOOD_S = float(os.environ.get("CORRAL_TEST_FLOOD_S", "15"))
#: The README's bounds: the manager holds at most ~max_frame_bytes (1 MiB) plus 128 KiB of reader
#: buffer per sandbox; what is left is the interpreter's own noise.
RSS_GROWTH_BOUND = 48 * 2**20
#: Per sandbox per minute: 4 stderr excerpts of 2048 bytes in all (escaped at most 2x) plus a few
#: lifecycle records (started, removed, a violation), each well under 1 KiB.
LOG_BOUND = 16 * 1024 + int(FLOOD_S / 60 + 1) * 8 * 1024


def session() -> str:
    return f"sesn_{uuid.uuid4().hex}"


def rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class LogMeter(logging.Handler):
    """Every record the manager emits, formatted as its JSON log lines; their bytes."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter("sandbox-manager"))
        self.bytes = 0
        self.entries: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        self.bytes += len(line.encode()) + 1
        self.entries.append(json.loads(line))


@contextlib.contextmanager
def metered_logs() -> Iterator[LogMeter]:
    meter = LogMeter()
    logger = logging.getLogger("corral.sandbox_manager")
    level = logger.level
    logger.setLevel(logging.INFO)  # the service's default level
    logger.addHandler(meter)
    try:
        yield meter
    finally:
        logger.removeHandler(meter)
        logger.setLevel(level)


class PeakRss:
    """Samples this process's resident memory while a flood runs (a measurement, not a wait)."""

    def __init__(self) -> None:
        self.start = rss()
        self.peak = self.start
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss())
            await asyncio.sleep(0.1)

    async def __aenter__(self) -> PeakRss:
        self._task = asyncio.ensure_future(self._sample())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.peak = max(self.peak, rss())

    @property
    def growth(self) -> int:
        return self.peak - self.start


def host_pid(manager: Manager, container_id: str) -> int:
    """The container's PID 1 (the agent's reaper, holding the same stdin/stdout/stderr) on the host."""
    assert os.geteuid() == 0, "these tests write into a container's descriptors from the host: run them as root"
    return int(manager.engine.client.api.inspect_container(container_id)["State"]["Pid"])


def write_for(path: str, chunk: bytes, seconds: float, *, per_s: float | None = None) -> int:
    """Write ``chunk`` to ``path`` over and over for ``seconds`` (or until the reader is gone), at most
    ``per_s`` bytes a second when given (pacing the writer, not waiting for anything); bytes written."""
    written = 0
    began = time.monotonic()
    with contextlib.suppress(OSError), open(path, "wb", buffering=0) as sink:
        while (elapsed := time.monotonic() - began) < seconds:
            if per_s is not None and written > elapsed * per_s:
                time.sleep(len(chunk) / per_s)
                continue
            written += sink.write(chunk) or 0
    return written


async def test_a_sandbox_flooding_every_output_it_reaches_leaves_the_manager_within_its_bounds(
    manager: Manager, report: Any
) -> None:
    sid = session()
    await manager.bash(sid, "echo ready")
    container_id = (await manager.provision(sid)).container_id
    d = f"{FLOOD_S:g}"
    # Background processes that outlive the call: each tries the agent's (and PID 1's) stdin, stdout
    # and stderr through /proc, and floods them (lines that are not replies, and no newline at all).
    background = (
        "agent=$PPID\n"
        "for t in /proc/1/fd/0 /proc/1/fd/1 /proc/1/fd/2 /proc/$agent/fd/0 /proc/$agent/fd/1 /proc/$agent/fd/2; do\n"
        '  if ( : > "$t" ) 2>/dev/null; then echo "opened $t"; else echo "refused $t"; fi\n'
        "done\n"
        "for t in /proc/1/fd/1 /proc/1/fd/2 /proc/$agent/fd/1 /proc/$agent/fd/2; do\n"
        f"  setsid timeout {d} sh -c \"tr '\\\\0' x < /dev/zero > $t\" >/dev/null 2>&1 &\n"
        f'  setsid timeout {d} sh -c "yes not-a-reply > $t" >/dev/null 2>&1 &\n'
        "done\n"
        # and into the shell's own output, between calls and during the next one
        f"(timeout {d} yes background-flood &)\n"
        "echo started"
    )
    async with PeakRss() as memory:
        with metered_logs() as logs:
            began = time.monotonic()
            tried = await manager.bash(sid, background)
            # a call whose own output (stdout and stderr) floods for the whole time
            foreground = await manager.execute(
                sid,
                "bash",
                {"command": f"timeout {d} sh -c 'while :; do yes foreground-flood; yes >&2; done'; true"},
                timeout_ms=int(FLOOD_S * 1000) + 30_000,
            )
            after = await manager.execute(sid, "bash", {"command": "echo alive"})
            flooded_s = time.monotonic() - began
    report(
        f"flood {flooded_s:.1f} s: manager RSS +{memory.growth / 2**20:.1f} MiB (bound "
        f"{RSS_GROWTH_BOUND / 2**20:.0f}), logs {logs.bytes} bytes in {len(logs.entries)} records (bound {LOG_BOUND})"
    )
    assert memory.growth <= RSS_GROWTH_BOUND
    assert logs.bytes <= LOG_BOUND, logs.entries[:5]
    lines = [line for line in tried.splitlines() if line != "background-flood"]
    assert [line for line in lines if line.startswith("opened")] == [], lines  # the agent's seal
    assert len([line for line in lines if line.startswith("refused")]) == 6, lines
    assert "started" in lines
    assert not foreground.is_error, foreground.content[-1].text[-300:]
    assert "[output truncated" in foreground.content[-1].text  # capped like any output
    assert not after.is_error and "alive" in after.content[-1].text
    assert (await manager.provision(sid)).container_id == container_id  # the same sandbox, never broken


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"x" * (3 * 2**20), "it sent a reply line longer than the 1048576-byte frame limit"),
        (b"Traceback (most recent call last):\n", "it sent a line that is not an exec agent reply: 'Traceback"),
    ],
    ids=["oversized", "garbage"],
)
async def test_output_that_is_no_reply_ends_the_sandbox_with_a_tool_error_and_the_next_call_gets_a_fresh_one(
    manager: Manager, payload: bytes, why: str
) -> None:
    sid, key = session(), f"toolu_{uuid.uuid4().hex}"
    await manager.bash(sid, "echo precious > /workspace/file.txt")
    before = (await manager.provision(sid)).container_id
    pid = host_pid(manager, before)
    running = asyncio.ensure_future(
        manager.execute(sid, "bash", {"command": "echo begun > /workspace/begun; sleep 30"}, tool_use_id=key)
    )

    async def begun() -> bool:
        return "begun" in (await manager.execute(sid, "read", {"file_path": "begun"})).content[-1].text

    await eventually(begun, timeout=10)
    with metered_logs() as logs:
        await asyncio.to_thread(write_for, f"/proc/{pid}/fd/1", payload, 0.5)
        async with asyncio.timeout(10):
            removed = await running
    assert removed.is_error and removed.executed
    text = removed.content[-1].text
    assert text.startswith(f"the sandbox was removed while running this tool because {why}"), text
    assert text.endswith("a new sandbox will be used for the next call; files in /workspace were lost")
    violations = [e for e in logs.entries if e["msg"].startswith("a sandbox broke the exec agent's protocol")]
    assert len(violations) == 1 and violations[0]["session_id"] == sid
    assert logs.bytes < 8 * 1024
    assert await manager.bash(sid, "cat /workspace/file.txt 2>&1 || true") == (
        "cat: /workspace/file.txt: No such file or directory\n"
    )
    assert (await manager.provision(sid)).container_id != before

    async def gone() -> bool:
        return before not in containers_of(manager.engine)

    await eventually(gone, timeout=10)


async def test_stderr_is_drained_never_blocks_the_sandbox_and_only_an_excerpt_is_logged(
    manager: Manager, report: Any
) -> None:
    sid = session()
    await manager.bash(sid, "echo ready")
    container_id = (await manager.provision(sid)).container_id
    pid = host_pid(manager, container_id)
    per_s = STDERR_MAX_BYTES / EXCERPT_WINDOW_S / 2  # half the rate that ends a sandbox
    async with PeakRss() as memory:
        with metered_logs() as logs:
            flood = asyncio.ensure_future(
                asyncio.to_thread(write_for, f"/proc/{pid}/fd/2", b"stderr-flood " * 5000 + b"\n", FLOOD_S, per_s=per_s)
            )
            calls = 0
            while not flood.done():  # the sandbox answers all along
                assert await manager.bash(sid, "echo ok") == "ok\n"
                calls += 1
            written = await flood
            assert (await manager.provision(sid)).container_id == container_id
            # the stream's end says how much was dropped since the last excerpt
            released = await manager.rpc(SandboxOp.RELEASE, {"session_id": sid, "reason": "session archived"})
            assert released.ok, released.error
    assert calls > 0 and written > 0.8 * per_s * FLOOD_S, written
    excerpts = [e for e in logs.entries if "excerpt" in e]
    assert 1 <= len(excerpts) <= 4 * int(FLOOD_S / 60 + 1)
    assert all(e["session_id"] == sid for e in excerpts)
    logged = sum(len(e["excerpt"]) for e in excerpts)
    dropped = sum(e.get("dropped_bytes", 0) for e in logs.entries)
    assert logged <= 2048 * int(FLOOD_S / 60 + 1)
    assert logged + dropped >= 0.9 * written, (logged, dropped, written)
    report(
        f"stderr flood {FLOOD_S:g} s, {written / 2**20:.0f} MiB: manager RSS +{memory.growth / 2**20:.1f} MiB, "
        f"logs {logs.bytes} bytes in {len(logs.entries)} records"
    )
    assert memory.growth <= RSS_GROWTH_BOUND
    assert logs.bytes <= LOG_BOUND, logs.entries[:5]


async def test_a_stderr_flood_beyond_its_rate_ends_the_sandbox_and_the_next_call_says_why(manager: Manager) -> None:
    sid = session()
    await manager.bash(sid, "echo precious > /workspace/file.txt")
    before = (await manager.provision(sid)).container_id
    pid = host_pid(manager, before)
    with metered_logs() as logs:
        written = await asyncio.to_thread(write_for, f"/proc/{pid}/fd/2", b"e" * 65536, 10.0)

        async def gone() -> bool:
            return before not in containers_of(manager.engine)

        await eventually(gone, timeout=10)
    assert written > STDERR_MAX_BYTES
    violations = [e for e in logs.entries if e["msg"].startswith("a sandbox broke the exec agent's protocol")]
    assert len(violations) == 1 and violations[0]["session_id"] == sid
    assert logs.bytes < 8 * 1024
    after = await manager.execute(sid, "bash", {"command": "cat /workspace/file.txt 2>&1 || true"})
    assert [b.text for b in after.content] == [
        f"The previous sandbox of this session was removed because it wrote more than {STDERR_MAX_BYTES} bytes "
        "to stderr within 60 s (the exec agent never does that: something in the sandbox wrote to its output); "
        "this is a new sandbox, and files in /workspace were lost.",
        "cat: /workspace/file.txt: No such file or directory\n",
    ]
