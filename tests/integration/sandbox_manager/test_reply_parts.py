"""Tool outputs of megabytes (issue "Sessions of any length": a 5 MB tool result is stored whole).

The exec agent sends an output longer than one reply line in parts, each line within
``CORRAL_SANDBOX_MAX_FRAME_BYTES`` (1 MiB, unchanged); the manager puts them together up to
``CORRAL_SANDBOX_OUTPUT_LIMIT`` (8 MiB), records the outcome (in ``corral_tool_outputs``, too large
for a KV entry) and answers through the bodies object store (the reply is larger than one NATS
message). Parts that break the rules, written into the agent's stdout from the host (as root,
through ``/proc/<pid>/fd``: a sandbox that got past the agent's seal), end that sandbox with a tool
error like any other protocol violation, and the next call gets a fresh container.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid

import pytest

from tests.integration.sandbox_manager.conftest import Manager, containers_of, eventually
from tests.integration.sandbox_manager.test_stream_bounds import host_pid, metered_logs, write_for

pytestmark = pytest.mark.integration

FIVE_MB = 5_000_000


def session() -> str:
    return f"sesn_{uuid.uuid4().hex}"


async def test_a_5_mb_output_arrives_whole_and_is_answered_again_whole_from_its_record(manager: Manager) -> None:
    sid, key = session(), f"toolu_{uuid.uuid4().hex}"
    assert manager.settings.sandbox.output_limit >= FIVE_MB
    assert manager.settings.sandbox.max_frame_bytes == 1 << 20  # the frame bound did not grow
    await manager.bash(sid, f"head -c {FIVE_MB * 3 // 4} /dev/urandom | base64 -w 0 > /workspace/big.txt")
    digest = (await manager.bash(sid, "sha256sum < /workspace/big.txt")).split()[0]
    outcome = await manager.execute(sid, "bash", {"command": "cat /workspace/big.txt"}, tool_use_id=key)
    assert not outcome.is_error and outcome.executed
    text = outcome.content[-1].text
    assert len(text) == FIVE_MB and "[output truncated" not in text
    assert hashlib.sha256(text.encode()).hexdigest() == digest
    again = await manager.execute(sid, "bash", {"command": "cat /workspace/big.txt"}, tool_use_id=key)
    assert not again.executed and again.content[-1].text == text  # from corral_tool_outputs, not run again
    # a read of the same file is as whole, and the sandbox goes on
    read = await manager.execute(sid, "read", {"file_path": "big.txt"})
    assert (
        not read.is_error
        and read.content[-1].text == f"{1:6}\t" + text[:4000] + f" [line truncated: {FIVE_MB} characters in all]"
    )
    assert await manager.bash(sid, "echo alive") == "alive\n"


def forged_part(call_id: str, part: int, parts: int, total: int, text: str) -> bytes:
    body = {"id": call_id, "part": part, "parts": parts, "bytes": total, "content": [{"type": "text", "text": text}]}
    return json.dumps(body).encode() + b"\n"


PART = 163_840  # the default frame's part size: (1048576 - 65536) / 6


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (forged_part("forged-1", 0, 50, 1000, "a" * 1000), "it announced a reply of 1000 bytes in 50 parts of 163840"),
        (
            forged_part("forged-1", 0, 3, 400_000, "a" * 200_000),
            "it sent a part of 200000 bytes (parts but the last carry 163837 to 163840)",
        ),
        (
            forged_part("forged-1", 0, 2, 200_000, "a" * PART) + b"Traceback (most recent call last):\n",
            "it sent a line inside a reply in parts: 'Traceback (most recent call last):'",
        ),
    ],
    ids=["lying-part-count", "oversize-part", "garbage-between-parts"],
)
async def test_parts_that_break_the_rules_end_the_sandbox_and_the_next_call_gets_a_fresh_one(
    manager: Manager, payload: bytes, why: str
) -> None:
    sid, key = session(), f"toolu_{uuid.uuid4().hex}"
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
    violations = [e for e in logs.entries if e["msg"].startswith("a sandbox broke the exec agent's protocol")]
    assert len(violations) == 1 and violations[0]["session_id"] == sid
    assert await manager.bash(sid, "echo fresh") == "fresh\n"
    assert (await manager.provision(sid)).container_id != before

    async def gone() -> bool:
        return before not in containers_of(manager.engine)

    await eventually(gone, timeout=10)
